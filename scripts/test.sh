#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: formatting, lints, then every
# test (unit, storage suite, 3-node failover, supervisor restart, bad input).
# One cargo profile (release) for everything, so RocksDB compiles once.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/sundial-target}"
"$ROOT/scripts/ensure-deps.sh"
cd "$ROOT"
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets --locked -- -D warnings
cargo test --release --workspace --locked
