#!/usr/bin/env bash
# Drain throughput of a local 3-node Sundial cluster against a PostgreSQL job
# queue drained with `FOR UPDATE SKIP LOCKED`, both with 16 worker slots, in
# one run on this machine, and the ratio.
#
#   scripts/bench-vs-postgres.sh [--jobs 50000] [--slots 16] [--prefetch 240] [--duration 20s]
#
# PostgreSQL side: Debian's postgresql (installed if missing), a throwaway
# cluster in a temp dir (default durability: fsync on, synchronous_commit on),
# a table preloaded with ready jobs, and pgbench with 16 clients running one
# script per job: lease (UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP
# LOCKED LIMIT 1)) in one transaction, completion in another — two durable
# commits per job, as Sundial's lease and completion are two quorum-durable
# Raft writes. Sundial side: `sundial bench e2e` (backlog first, then worker
# streams with 16 slots in all drain it), run twice: each slot leasing a job
# only when free, then with the streams holding --prefetch more jobs leased
# ahead (the SDK's Worker::prefetch; still 16 running at once, every lease
# and completion still its own quorum-durable state change, batched in fewer
# Raft entries). Uses its own state dirs; Sundial on
# ports 7071-7073, so stop a running `scripts/cluster.sh` cluster first.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/sundial-target}"
BIN="$CARGO_TARGET_DIR/release/sundial"
JOBS=50000
SLOTS=16
PREFETCH=240
DURATION=20s
while (( $# )); do
  case "$1" in
    --jobs) JOBS=$2; shift 2 ;;
    --slots) SLOTS=$2; shift 2 ;;
    --prefetch) PREFETCH=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    *) echo "bench-vs-postgres: unknown argument $1" >&2; exit 2 ;;
  esac
done

PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
if [[ -z "$PGBIN" || ! -x "$PGBIN/postgres" ]]; then
  echo "bench-vs-postgres: installing postgresql" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  PGBIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
fi
"$ROOT/scripts/ensure-deps.sh"
(cd "$ROOT" && cargo build --release --workspace --all-targets --locked) >&2

WORK="$(mktemp -d /var/tmp/sundial-pgbench.XXXXXX)"
chmod 755 "$WORK"
AS_PG=()
if [[ $(id -u) -eq 0 ]]; then
  chown postgres "$WORK"
  AS_PG=(runuser -u postgres --)
fi
cleanup() {
  "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" stop -m immediate >/dev/null 2>&1 || true
  SUNDIAL_CLUSTER_DIR="$WORK/sundial" "$ROOT/scripts/cluster.sh" down >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "postgres: $("$PGBIN/postgres" --version)"

# --- PostgreSQL: SKIP LOCKED queue ---
PORT=55432
"${AS_PG[@]}" "$PGBIN/initdb" -D "$WORK/pg" -A trust -U bench >/dev/null
"${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" \
  -o "-p $PORT -k $WORK -c listen_addresses='' -c max_connections=100" -w start >/dev/null
PSQL=(psql -h "$WORK" -p "$PORT" -U bench -d postgres -v ON_ERROR_STOP=1 -q)
"${PSQL[@]}" <<SQL
CREATE TABLE jobs (id bigserial PRIMARY KEY, state text NOT NULL, payload bytea NOT NULL);
CREATE INDEX jobs_ready ON jobs (id) WHERE state = 'ready';
INSERT INTO jobs (state, payload) SELECT 'ready', convert_to(repeat('x', 100), 'UTF8') FROM generate_series(1, $((JOBS * 4)));
VACUUM ANALYZE jobs;
SQL
cat >"$WORK/drain.sql" <<'SQL'
BEGIN;
UPDATE jobs SET state = 'leased' WHERE id = (
  SELECT id FROM jobs WHERE state = 'ready' ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1
) RETURNING id AS job_id \gset
COMMIT;
UPDATE jobs SET state = 'done' WHERE id = :job_id;
SQL
echo "postgres: draining with $SLOTS clients for $DURATION (2 durable commits per job)"
PG_OUT="$(pgbench -h "$WORK" -p "$PORT" -U bench -n -c "$SLOTS" -j 2 -T "${DURATION%s}" -f "$WORK/drain.sql" postgres 2>&1)"
PG_TPS="$(echo "$PG_OUT" | awk '/^tps = /{print $3; exit}')"
echo "$PG_OUT" | grep -E "number of transactions actually processed|latency average|^tps" | sed 's/^/  /'
"${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" stop -m fast >/dev/null

# --- Sundial ---
export SUNDIAL_CLUSTER_DIR="$WORK/sundial"
"$ROOT/scripts/cluster.sh" up 3 >/dev/null
drain() {
  "$BIN" bench e2e --targets 127.0.0.1:7071,127.0.0.1:7072,127.0.0.1:7073 --jobs "$JOBS" --slots "$SLOTS" \
    --prefetch "$1" --output json 2>/dev/null | tail -1
}
echo "sundial: $JOBS jobs drained by $SLOTS slots (lease and completion each a quorum-durable Raft write)"
PLAIN_OUT="$(drain 0)"
echo "  no prefetch: $PLAIN_OUT"
PREFETCH_OUT="$(drain "$PREFETCH")"
echo "  prefetch $PREFETCH: $PREFETCH_OUT"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$PG_TPS" "$PLAIN_OUT" "$PREFETCH_OUT" "$PREFETCH" <<'PY'
import json, sys
pg = float(sys.argv[1])
plain = json.loads(sys.argv[2])["jobs_per_second"]
ahead = json.loads(sys.argv[3])["jobs_per_second"]
print(f"postgres SKIP LOCKED: {pg:,.0f} jobs/s   sundial: {plain:,.0f} jobs/s (ratio {plain / pg:.2f}x), "
      f"with prefetch {sys.argv[4]}: {ahead:,.0f} jobs/s (ratio {ahead / pg:.2f}x)")
PY
