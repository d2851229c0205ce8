#!/usr/bin/env bash
# Builds the `sundial:local` container image with no registry: the Docker
# engine here can pull no base image, so the image is FROM scratch with the
# sundial binary, the shared libraries `ldd` lists for it (and the dynamic
# loader), CA certificates for HTTPS targets, and an empty /data and /tmp.
#
#   scripts/build-image.sh [--tag sundial:local] [--no-build]
#
# The binary is the workspace's release build (the same one the tests and
# scripts/cluster.sh use, so nothing compiles twice).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/sundial-target}"
TAG="sundial:local"
BUILD=1
while (( $# )); do
  case "$1" in
    --tag) TAG="$2"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    *) echo "build-image: unknown argument $1 (use --tag NAME, --no-build)" >&2; exit 2 ;;
  esac
done
command -v docker >/dev/null || { echo "build-image: docker is not installed" >&2; exit 1; }
if (( BUILD )); then
  "$ROOT/scripts/ensure-deps.sh"
  (cd "$ROOT" && cargo build --release --workspace --all-targets --locked)
fi
BIN="$CARGO_TARGET_DIR/release/sundial"
[[ -x "$BIN" ]] || { echo "build-image: $BIN is missing; run without --no-build" >&2; exit 1; }

CTX="$(mktemp -d)"
trap 'rm -rf "$CTX"' EXIT
mkdir -p "$CTX/rootfs/usr/local/bin" "$CTX/rootfs/data" "$CTX/rootfs/tmp" "$CTX/rootfs/etc/ssl/certs"
# Debug line tables stay in the build (backtraces); the image gets a
# stripped copy (~500 MiB -> tens of MiB).
objcopy --strip-debug "$BIN" "$CTX/rootfs/usr/local/bin/sundial"
# Every library the binary links, and the dynamic loader, at the paths the
# loader looks for them.
ldd "$BIN" | grep -o '/[^ ]*' | sort -u | while read -r lib; do
  mkdir -p "$CTX/rootfs$(dirname "$lib")"
  cp -L "$lib" "$CTX/rootfs$lib"
done
[[ -f /etc/ssl/certs/ca-certificates.crt ]] && cp /etc/ssl/certs/ca-certificates.crt "$CTX/rootfs/etc/ssl/certs/"
cat > "$CTX/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
ENV SUNDIAL_DATA_DIR=/data
VOLUME /data
EXPOSE 7070 7170 7270
ENTRYPOINT ["/usr/local/bin/sundial"]
CMD ["dev", "--listen", "0.0.0.0:7070", "--data-dir", "/data"]
DOCKERFILE
docker build -q -t "$TAG" "$CTX" >/dev/null
echo "build-image: built $TAG ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MiB", $1/1048576}'))"
