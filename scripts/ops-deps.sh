#!/usr/bin/env bash
# Installs what the operations kit's checks (tests/ops_kit.rs) use: promtool, from Debian's
# prometheus package, for `promtool check config`, `check rules` and `test rules` on
# deploy/prometheus/ (the package's Prometheus server is not started); systemd-analyze for
# `verify` of deploy/production/systemd/.
set -euo pipefail
say() { printf '[ops-deps] %s\n' "$*"; }
if ! command -v promtool >/dev/null; then
  say "installing prometheus (for promtool)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
if ! command -v systemd-analyze >/dev/null; then
  say "installing systemd (for systemd-analyze)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
say "$(promtool --version 2>&1 | head -1); $(systemd-analyze --version | head -1)"
