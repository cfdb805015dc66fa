#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine, and nothing
# twice: wireguard-go and wg (interop peer), iproute2 (network namespaces),
# curl and python3 (clients and servers inside namespaces).
# With --bench it also installs onetun for `inferadb-mesh bench tunnel`.
set -euo pipefail

need=()
for pair in wireguard-go:wireguard-go wg:wireguard-tools ip:iproute2 curl:curl python3:python3 ping:iputils-ping; do
  tool=${pair%%:*}
  pkg=${pair#*:}
  command -v "$tool" >/dev/null 2>&1 || need+=("$pkg")
done

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-deps: need root to install: ${need[*]}" >&2
    exit 1
  fi
  echo "install-test-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ "${1:-}" = "--bench" ] && ! command -v onetun >/dev/null 2>&1; then
  echo "install-test-deps: installing onetun (cargo install, a few minutes)"
  cargo install onetun --locked --quiet
fi
echo "install-test-deps: ok"
