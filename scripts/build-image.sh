#!/usr/bin/env bash
# Builds the inferadb-mesh container image with Debian's own tools (umoci;
# no registry, no base image: the image starts empty, as FROM scratch):
#
#   /usr/local/bin/inferadb-mesh   the release binary, debug info and symbols
#                                  split off (objcopy --only-keep-debug, then
#                                  --strip-all with a .gnu_debuglink to the
#                                  split file: ~20 MB instead of ~130 MB;
#                                  symbolise a backtrace with the .debug file,
#                                  e.g. addr2line -e inferadb-mesh-TAG.debug)
#   the binary's shared libraries  whatever `ldd` lists, the loader included
#   /etc/ssl/certs/ca-certificates.crt   Debian's CA bundle
#   /etc/passwd, /etc/group        root and nonroot (uid/gid 65532), the
#                                  image's user
#   /tmp (1777), /var/lib/inferadb-mesh (0700, 65532)
#
# Usage: scripts/build-image.sh [--binary PATH] [--out DIR] [--tag TAG]
#   --binary  default $CARGO_TARGET_DIR/release/inferadb-mesh (or
#             target/release/…); built with `cargo build --release -p
#             inferadb-mesh` when missing (10-20 min on 2 cores)
#   --out     default <target dir>/image
#   --tag     default the crate version, which is the chart's appVersion
#
# Writes, in --out:
#   oci/                          an OCI image layout, reference TAG
#   inferadb-mesh-TAG.oci.tar     the same layout as one tar (podman load,
#                                 skopeo copy oci-archive:…)
#   inferadb-mesh-TAG.debug       the split debug info (keep it for symbolising
#                                 crash backtraces; not in the image)
# The image is named inferadb/inferadb-mesh:TAG, the chart's default
# image.repository and tag. Push it with e.g.
#   skopeo copy oci:OUT/oci:TAG docker://REGISTRY/inferadb/inferadb-mesh:TAG
# Check it with scripts/check-image.sh.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BINARY=""
OUT=""
TAG=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) BINARY=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --tag) TAG=$2; shift 2 ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    *) echo "build-image: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
BINARY=${BINARY:-$TARGET/release/inferadb-mesh}
OUT=${OUT:-$TARGET/image}
if [ -z "$TAG" ]; then
  TAG=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
fi
IMAGE_NAME=inferadb/inferadb-mesh

for tool in umoci objcopy ldd; do
  command -v "$tool" >/dev/null || {
    echo "build-image: $tool not found (apt-get install umoci binutils libc-bin)" >&2
    exit 1
  }
done
[ -r /etc/ssl/certs/ca-certificates.crt ] || {
  echo "build-image: /etc/ssl/certs/ca-certificates.crt missing (apt-get install ca-certificates)" >&2
  exit 1
}
if [ ! -x "$BINARY" ]; then
  echo "build-image: $BINARY missing; cargo build --release -p inferadb-mesh (10-20 min)" >&2
  (cd "$ROOT" && cargo build --release -p inferadb-mesh)
fi

mkdir -p "$OUT"
WORK=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOTFS=$WORK/rootfs
mkdir -p "$ROOTFS"/usr/local/bin "$ROOTFS"/etc/ssl/certs "$ROOTFS"/tmp "$ROOTFS"/var/lib/inferadb-mesh

# The binary without debug info and symbols; both beside the image.
DEBUG=$OUT/inferadb-mesh-$TAG.debug
objcopy --only-keep-debug "$BINARY" "$DEBUG"
objcopy --strip-all --add-gnu-debuglink="$DEBUG" "$BINARY" "$ROOTFS/usr/local/bin/inferadb-mesh"
chmod 0755 "$ROOTFS/usr/local/bin/inferadb-mesh"

# Its shared libraries and the loader, at the paths the loader looks them
# up by (ldd's left column for the loader, the resolved path for the rest).
ldd "$BINARY" | while read -r first arrow path _; do
  case "$first" in linux-vdso.so.*) continue ;; esac
  if [ "$arrow" = "=>" ]; then lib=$path; else lib=$first; fi
  case "$lib" in /*) ;; *) echo "build-image: ldd: cannot place $first" >&2; exit 1 ;; esac
  mkdir -p "$ROOTFS$(dirname "$lib")"
  cp -L "$lib" "$ROOTFS$lib"
done

cp -L /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
cat > "$ROOTFS/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/var/lib/inferadb-mesh:/sbin/nologin
PASSWD
cat > "$ROOTFS/etc/group" <<'GROUP'
root:x:0:
nonroot:x:65532:
GROUP
chmod 1777 "$ROOTFS/tmp"
chmod 0700 "$ROOTFS/var/lib/inferadb-mesh"
chown 65532:65532 "$ROOTFS/var/lib/inferadb-mesh"
chmod 0644 "$ROOTFS/etc/passwd" "$ROOTFS/etc/group" "$ROOTFS/etc/ssl/certs/ca-certificates.crt"

# An empty image (FROM scratch), one layer of the tree above, the config.
rm -rf "$OUT/oci"
umoci init --layout "$OUT/oci"
umoci new --image "$OUT/oci:$TAG"
umoci unpack --image "$OUT/oci:$TAG" "$WORK/bundle" >/dev/null
cp -a "$ROOTFS/." "$WORK/bundle/rootfs/"
umoci repack --image "$OUT/oci:$TAG" "$WORK/bundle"
umoci config --image "$OUT/oci:$TAG" \
  --config.user 65532:65532 \
  --config.entrypoint /usr/local/bin/inferadb-mesh \
  --config.workingdir /var/lib/inferadb-mesh \
  --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --config.env NO_COLOR=1 \
  --config.label "org.opencontainers.image.title=$IMAGE_NAME" \
  --config.label "org.opencontainers.image.version=$TAG" \
  --config.label "org.opencontainers.image.source=https://github.com/inferadb/inferadb-mesh" \
  --config.label "org.opencontainers.image.base.name=scratch" \
  --author "inferadb-mesh scripts/build-image.sh" \
  --history.created_by "scripts/build-image.sh (umoci, FROM scratch)"
umoci gc --layout "$OUT/oci"

tar -C "$OUT/oci" -cf "$OUT/inferadb-mesh-$TAG.oci.tar" .
echo "build-image: $IMAGE_NAME:$TAG in $OUT/oci (and $OUT/inferadb-mesh-$TAG.oci.tar)"
echo "build-image: binary $(stat -c %s "$ROOTFS/usr/local/bin/inferadb-mesh") bytes (was $(stat -c %s "$BINARY")); debug info in $DEBUG"
