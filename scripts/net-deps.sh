#!/usr/bin/env bash
# Installs what the flaky-link tests (tests/flaky.rs, tests/common/netns.rs) use: iproute2
# (ip netns, veth, tc with the tbf qdisc) and nftables (a cut that drops every packet while
# the link stays up). Without nftables the tests cut by setting the link down instead.
set -euo pipefail
say() { printf '[net-deps] %s\n' "$*"; }
missing=()
command -v ip >/dev/null && command -v tc >/dev/null || missing+=(iproute2)
command -v nft >/dev/null || missing+=(nftables)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
    say "could not install ${missing[*]}; the flaky-link tests cut by setting the link down"
  fi
fi
say "$(ip -V 2>&1 | head -1); $(nft --version 2>/dev/null || echo 'no nftables')"
