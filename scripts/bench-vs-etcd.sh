#!/usr/bin/env bash
# Submit throughput of a local 3-node Sundial cluster against a local 3-member
# etcd cluster, driven by the same load generator (`sundial bench`), with the
# same value size and concurrency, in one run on this machine. Both clusters
# stay up and the concurrency levels alternate between them, so drift in the
# machine's load hits both alike.
#
#   scripts/bench-vs-etcd.sh [--clients 1,16,64,256] [--duration 10s] [--payload-bytes 100]
#
# Installs Debian's etcd-server if missing. Uses its own state dirs and ports
# (etcd 23791-23793 / 23801-23803; Sundial 7071-7073), so stop a running
# `scripts/cluster.sh` cluster first. Every acknowledged write on both sides is
# quorum-committed and fsynced.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/sundial-target}"
BIN="$CARGO_TARGET_DIR/release/sundial"
CLIENTS=1,16,64,256
DURATION=10s
PAYLOAD=100
while (( $# )); do
  case "$1" in
    --clients) CLIENTS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --payload-bytes) PAYLOAD=$2; shift 2 ;;
    *) echo "bench-vs-etcd: unknown argument $1" >&2; exit 2 ;;
  esac
done

if ! command -v etcd >/dev/null 2>&1; then
  echo "bench-vs-etcd: installing etcd-server" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
fi
"$ROOT/scripts/ensure-deps.sh"
(cd "$ROOT" && cargo build --release -p sundial --bin sundial) >&2

WORK="$(mktemp -d /var/tmp/sundial-bench.XXXXXX)"
ETCD_PIDS=()
cleanup() {
  for p in "${ETCD_PIDS[@]:-}"; do [[ -n "$p" ]] && kill "$p" 2>/dev/null || true; done
  SUNDIAL_CLUSTER_DIR="$WORK/sundial" "$ROOT/scripts/cluster.sh" down >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "etcd: $(etcd --version 2>/dev/null | head -1)"

# --- etcd, 3 members on loopback ---
initial="e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803"
for i in 1 2 3; do
  etcd --name "e$i" --data-dir "$WORK/etcd$i" \
    --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
    --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
    --initial-cluster "$initial" --initial-cluster-state new --initial-cluster-token sundial-bench \
    >"$WORK/etcd$i.log" 2>&1 &
  ETCD_PIDS+=($!)
done
ETCD_TARGETS=127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793
# Ready when a put succeeds through the load generator itself.
for _ in $(seq 1 100); do
  "$BIN" bench etcd-put --targets "$ETCD_TARGETS" --clients 1 --duration 200ms --output json 2>/dev/null \
    | grep -q '"jobs":[1-9]' && break
  sleep 0.2
done

# --- Sundial, 3 nodes on loopback (both clusters stay up; each is idle while
# the other is measured, and levels alternate so machine drift hits both) ---
SUNDIAL_CLUSTER_DIR="$WORK/sundial" SUNDIAL_LOG=warn "$ROOT/scripts/cluster.sh" up 3 >&2
SUNDIAL_TARGETS=127.0.0.1:7071,127.0.0.1:7072,127.0.0.1:7073
for c in ${CLIENTS//,/ }; do
  "$BIN" bench etcd-put --targets "$ETCD_TARGETS" --clients "$c" --duration "$DURATION" \
    --payload-bytes "$PAYLOAD" --output json | tee -a "$WORK/etcd.json"
  "$BIN" bench submit --targets "$SUNDIAL_TARGETS" --clients "$c" --duration "$DURATION" \
    --payload-bytes "$PAYLOAD" --output json | tee -a "$WORK/sundial.json"
done

echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$WORK/etcd.json" "$WORK/sundial.json" <<'PY'
import json, sys
def load(path):
    return {r["clients"]: r for r in map(json.loads, open(path))}
etcd, sundial = load(sys.argv[1]), load(sys.argv[2])
print(f"{'clients':>8} {'etcd put/s':>11} {'etcd p50':>9} {'etcd p99':>9} {'sundial/s':>10} {'sd p50':>8} {'sd p99':>8} {'ratio':>7}")
for c in sorted(etcd):
    e, s = etcd[c], sundial.get(c)
    if not s: continue
    ratio = s["jobs_per_second"] / e["jobs_per_second"] if e["jobs_per_second"] else float("inf")
    print(f"{c:>8} {e['jobs_per_second']:>11.0f} {e['p50_ms']:>8.2f}m {e['p99_ms']:>8.2f}m {s['jobs_per_second']:>10.0f} {s['p50_ms']:>7.2f}m {s['p99_ms']:>7.2f}m {ratio:>6.2f}x")
PY
