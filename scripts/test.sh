#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: formatting, lints, then every
# test (unit, storage suite, 3-node failover, supervisor restart, bad input),
# then a short chaos run on processes and one on containers.
# One cargo profile (release) for everything, so RocksDB compiles once.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/sundial-target}"
"$ROOT/scripts/ensure-deps.sh"
cd "$ROOT"
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets --locked -- -D warnings
cargo test --release --workspace --locked
# A short chaos run: a real 3-node cluster under every kind of fault, the
# history checked against every invariant (docs/CHAOS.md). The build is the
# one dev.sh and cluster.sh make (a no-op after the tests but for the chaos
# binary itself).
cargo build --release --workspace --all-targets --locked
"$CARGO_TARGET_DIR/release/chaos" --nodes 3 --duration "${SUNDIAL_CHAOS_DURATION:-150s}"
# The same attacks on containers of the locally built image (separate
# hosts as a container runtime sees them; partitions are `docker network
# disconnect`). Skipped, saying so, where no Docker engine runs.
if docker version >/dev/null 2>&1; then
  scripts/build-image.sh --no-build
  "$CARGO_TARGET_DIR/release/chaos" --mode docker --nodes 3 \
    --duration "${SUNDIAL_CHAOS_DOCKER_DURATION:-60s}" --failover-kills 5
else
  echo "test.sh: no Docker engine answers; skipping the container-mode chaos run" >&2
fi
