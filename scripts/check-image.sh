#!/usr/bin/env bash
# Checks the image scripts/build-image.sh built:
#   - under 30 MB (the layer as shipped, gzip, and the unpacked tree);
#   - the binary in it has no debug info, a .gnu_debuglink, and the split
#     debug file has the debug info;
#   - its user is 65532 and its entrypoint the binary;
#   - unpacked alone (nothing from the host), the binary runs in a chroot of
#     that tree as uid 65532 inside a fresh network namespace (loopback
#     only): `--version`, then `demo` (three regions, discovery,
#     invalidation), both exiting 0 with their expected output.
# Needs root (chroot, unshare), umoci, readelf (binutils), python3.
#
# Usage: scripts/check-image.sh [--out DIR] [--tag TAG]   (the defaults of
# build-image.sh)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$TARGET/image
TAG=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --tag) TAG=$2; shift 2 ;;
    *) echo "check-image: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$TAG" ]; then
  TAG=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
fi
LIMIT=${IMAGE_SIZE_LIMIT:-$((30 * 1000 * 1000))}
fail() { echo "check-image: FAIL: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (chroot and unshare)"
[ -d "$OUT/oci" ] || fail "no image at $OUT/oci: run scripts/build-image.sh"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# The manifest's layers and config, from the layout.
python3 - "$OUT/oci" "$TAG" > "$WORK/manifest.env" <<'PY'
import json, sys, os
layout, tag = sys.argv[1], sys.argv[2]
index = json.load(open(os.path.join(layout, "index.json")))
m = [d for d in index["manifests"] if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
if len(m) != 1:
    sys.exit(f"check-image: reference {tag} not in {layout}/index.json")
blob = lambda d: os.path.join(layout, "blobs", *d["digest"].split(":"))
manifest = json.load(open(blob(m[0])))
config = json.load(open(blob(manifest["config"])))
layers = sum(l["size"] for l in manifest["layers"])
c = config.get("config", {})
print(f"LAYERS={len(manifest['layers'])}")
print(f"LAYER_BYTES={layers}")
print(f"USER='{c.get('User', '')}'")
print(f"ENTRYPOINT='{' '.join(c.get('Entrypoint') or [])}'")
PY
. "$WORK/manifest.env"
[ "$LAYER_BYTES" -lt "$LIMIT" ] || fail "layers are $LAYER_BYTES bytes (limit $LIMIT)"
[ "$USER" = "65532:65532" ] || fail "image user is '$USER', not 65532:65532"
[ "$ENTRYPOINT" = "/usr/local/bin/inferadb-mesh" ] || fail "entrypoint is '$ENTRYPOINT'"

# Unpack the image alone: this tree is all the chroot has.
umoci raw unpack --image "$OUT/oci:$TAG" "$WORK/rootfs" >"$WORK/unpack.log" 2>&1 || fail "umoci raw unpack: $(tail -c 2000 "$WORK/unpack.log")"
TREE_BYTES=$(du -sb "$WORK/rootfs" | cut -f1)
[ "$TREE_BYTES" -lt "$LIMIT" ] || fail "unpacked tree is $TREE_BYTES bytes (limit $LIMIT)"
BIN=$WORK/rootfs/usr/local/bin/inferadb-mesh
if readelf -S "$BIN" 2>/dev/null | grep -q '\.debug_info'; then fail "the image's binary still has .debug_info"; fi
readelf -S "$BIN" 2>/dev/null | grep -q '\.gnu_debuglink' || fail "the image's binary has no .gnu_debuglink"
DEBUG=$OUT/inferadb-mesh-$TAG.debug
readelf -S "$DEBUG" 2>/dev/null | grep -q '\.debug_info' || fail "$DEBUG has no .debug_info"
[ "$(stat -c %u "$WORK/rootfs/var/lib/inferadb-mesh")" = 65532 ] || fail "/var/lib/inferadb-mesh is not owned by 65532"
grep -q '^nonroot:x:65532:65532:' "$WORK/rootfs/etc/passwd" || fail "no passwd entry for 65532"
[ -s "$WORK/rootfs/etc/ssl/certs/ca-certificates.crt" ] || fail "no CA certificates"

# Run it: a fresh network namespace (loopback only), chroot, uid 65532.
run() {
  timeout 300 unshare --net --fork sh -c '
    ip link set lo up 2>/dev/null || true
    exec chroot --userspec=65532:65532 "$0" /usr/local/bin/inferadb-mesh "$@"
  ' "$WORK/rootfs" "$@" > "$WORK/out" 2> "$WORK/err"
}
run --version || fail "--version: $(head -c 2000 "$WORK/err")"
grep -q "^inferadb-mesh $TAG" "$WORK/out" || fail "--version printed: $(head -c 500 "$WORK/out")"
VERSION=$(head -1 "$WORK/out")
run demo --mib 4 || fail "demo exited non-zero: $(tail -c 3000 "$WORK/err") $(tail -c 2000 "$WORK/out")"
grep -q "5/5 engines in 3 regions" "$WORK/out" || fail "demo did not deliver to 5/5 engines: $(tail -c 3000 "$WORK/out")"
grep -q "active; direct 127.0.0.1:" "$WORK/out" || fail "demo's peers are not direct: $(tail -c 3000 "$WORK/out")"

echo "check-image: ok: $VERSION; layers $LAYER_BYTES bytes (gzip), unpacked $TREE_BYTES bytes (limit $LIMIT each); --version and demo ran as 65532 in a chroot of the image alone"
