#!/usr/bin/env bash
# Installs what the browser test needs: Debian's Chromium, Node.js, and playwright-core (from
# tests/browser/package-lock.json; it drives the system Chromium and downloads no browser);
# also the DejaVu font of the festival plot.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[browser-deps] %s\n' "$*"; }
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
# The font the festival simulator's latency plot (and its tests) draw text with.
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  say "npm ci (playwright-core)"
  (cd tests/browser && npm ci --no-audit --no-fund --silent)
fi
say "chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}'), node $(node --version)"
