#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs the interop peers it needs,
# checks formatting and lints, runs every test (including the wireguard-go
# interop test in network namespaces, which needs root), and a short run of
# every fuzz target.
#
#   scripts/test.sh            everything
#   FUZZ_SECONDS=0 scripts/test.sh   skip the fuzz smoke run
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "installing test dependencies"
scripts/install-test-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check

# The engine is sans-IO (crates/tailnet-engine/src/lib.rs): no clock reads,
# no OS randomness, no async runtime or socket crates. The one allowed line
# is the unit tests' starting instant, marked `// test-only clock`.
step "tailnet-engine stays sans-IO"
if grep -rn -E 'Instant::now|SystemTime::now|getrandom' crates/tailnet-engine/src | grep -v '// test-only clock'; then
  echo "tailnet-engine reads a clock or OS randomness (above); take it as an argument" >&2
  exit 1
fi
if cargo tree -p tailnet-engine -e normal --prefix none | grep -E '^(tokio|mio|socket2|quinn-udp|async-[a-z-]+) '; then
  echo "tailnet-engine depends on an I/O crate (above)" >&2
  exit 1
fi

# No import circles between a crate's modules, no file over 800 lines of
# code, in the node's two crates (docs/ARCHITECTURE.md).
step "module layout of tailnet and tailnet-engine"
scripts/check-layout.py

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The tailnet crate's optional axum integration and the example needing it.
cargo clippy -p tailnet --features axum --all-targets --quiet -- -D warnings

# The embedding API's docs (and their links) stay whole.
step "cargo doc -p tailnet (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc -p tailnet --no-deps --features axum --quiet

# Data-moving tests use the dev profile with the hot crates optimised
# (see [profile.dev.package.*] in Cargo.toml).
step "cargo test (workspace)"
cargo test --workspace

# The embedding examples: each starts a coordinator in-process on
# loopback, joins its nodes, checks the answers and exits (~1 s each).
step "tailnet examples"
for example in http_whois hyper_client udp_echo; do
  cargo run -q -p tailnet --features axum --example "$example"
done

# The vendored smoltcp's own TCP unit tests, ours among them
# (vendor-notes/smoltcp.md); its own lockfile, our target directory.
step "cargo test (vendored smoltcp, its unit tests)"
(cd vendor/smoltcp && CARGO_TARGET_DIR=../../target/vendor-smoltcp cargo test --lib --features socket-tcp-bbr)

# The container image recipe on the debug binary `cargo test` built for the
# binary's integration tests (~10 s):
# libraries, passwd, CA bundle, and --version + demo as uid 65532 in a
# chroot of the image alone. CI builds no release binary, so the 30 MB
# limit is checked by running the same scripts after `cargo build
# --release` (README, "Container image"); here the limit is the debug
# binary's.
step "container image recipe (debug binary)"
target_dir=${CARGO_TARGET_DIR:-target}
scripts/build-image.sh --binary "$target_dir/debug/inferadb-mesh" --out "$target_dir/image-debug" >/dev/null
IMAGE_SIZE_LIMIT=150000000 scripts/check-image.sh --out "$target_dir/image-debug"

if [ "${FUZZ_SECONDS:-10}" != "0" ]; then
  step "fuzz smoke run (${FUZZ_SECONDS:-10} s per target)"
  scripts/fuzz-smoke.sh "${FUZZ_SECONDS:-10}"
fi
step "all tests passed"
