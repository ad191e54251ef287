#!/usr/bin/env bash
# Installs what the API fuzz test (tests/openapi.rs) needs: schemathesis, pinned, in the
# project venv `.venv/` (the one scripts/services.sh makes for SecantusDB).
set -euo pipefail
cd "$(dirname "$0")/.."
SCHEMATHESIS_VERSION=4.32.5
say() { printf '[fuzz-deps] %s\n' "$*"; }
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  python3 -m venv .venv 2>/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    rm -rf .venv
    python3 -m venv .venv
  }
fi
have=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null || true)
if [ "$have" != "$SCHEMATHESIS_VERSION" ]; then
  say "installing schemathesis $SCHEMATHESIS_VERSION into .venv"
  .venv/bin/pip install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi
say "schemathesis $(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("schemathesis"))')"
