#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: formatting, lints, then every
# test (unit, storage suite, 3-node failover, supervisor restart, bad input),
# then a short chaos run.
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
