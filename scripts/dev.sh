#!/usr/bin/env bash
# Runs a one-node Sundial on this machine: installs missing build tools,
# builds, then `sundial dev` (data in ./sundial-data, clients on 127.0.0.1:7070).
# Extra arguments go to `sundial dev` (e.g. --listen 127.0.0.1:7080).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/sundial-target}"
"$ROOT/scripts/ensure-deps.sh"
cd "$ROOT"
# The same build as the test suite (scripts/test.sh): one set of artifacts,
# so switching between tests, the cluster script and this rebuilds nothing.
cargo build --release --workspace --all-targets --locked
exec "$CARGO_TARGET_DIR/release/sundial" dev "$@"
