#!/usr/bin/env bash
# The DEV query titles through PostgreSQL pg_trgm with a GIN index, timed inside the server,
# for comparison with the title matcher's own lookup (`cargo run --release -p
# plexsync-plugin-title --example eval` prints those figures).
#
# Needs Debian's postgresql (15) and python3; runs a throwaway cluster on a unix socket in a
# temporary folder (as the `postgres` user when run as root) and removes it afterwards.
# Reads ../shared/matching in place (PLEXSYNC_MATCHING_DATA overrides); nothing is copied into
# the repository.
#
# The query is the shape a pg_trgm matcher needs to be fast: the `%` operator (GIN-indexed,
# threshold 0.3), best five by similarity:
#   SELECT id, similarity(title, $1) FROM shows WHERE title % $1 ORDER BY 2 DESC LIMIT 5
# Times are server-side (clock_timestamp around each statement in PL/pgSQL), so they leave
# out the client round trip the daemon would also pay. Sequential scans are disabled so the
# GIN index is used on the small table too.
#
# Usage: plugins/title/bench/pg_trgm_compare.sh [ROUNDS]   (default 5 rounds of 318 queries)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="${PLEXSYNC_MATCHING_DATA:-$here/../../../../shared/matching}"
rounds="${1:-5}"
bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "PostgreSQL server binaries not found: apt-get install postgresql" >&2
  exit 1
fi
[ -f "$data/catalogue.jsonl" ] || { echo "no $data/catalogue.jsonl" >&2; exit 1; }

work="$(mktemp -d)"
cleanup() {
  as_pg "$bin/pg_ctl" -D "$work/db" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
if [ "$(id -u)" = 0 ]; then
  chown postgres "$work"
  as_pg() { runuser -u postgres -- "$@"; }
else
  as_pg() { "$@"; }
fi

# The catalogue and the 50,000-row copy (real rows repeated under distinct ids, as the Rust
# benchmark builds it), and the DEV titles, as tab-separated files.
python3 - "$data" "$work" <<'EOF'
import json, sys
data, work = sys.argv[1], sys.argv[2]
clean = lambda s: (s or "").replace("\t", " ").replace("\n", " ").replace("\\", "\\\\")
shows = [json.loads(l) for l in open(f"{data}/catalogue.jsonl", encoding="utf-8") if l.strip()]
with open(f"{work}/shows.tsv", "w", encoding="utf-8") as f:
    for s in shows:
        f.write(f"{s['id']}\t{clean(s['title'])}\n")
with open(f"{work}/big.tsv", "w", encoding="utf-8") as f:
    n, rep = 0, 0
    while n < 50000:
        for s in shows:
            if n == 50000:
                break
            f.write(f"{s['id']}-r{rep}\t{clean(s['title'])}\n")
            n += 1
        rep += 1
with open(f"{work}/queries.tsv", "w", encoding="utf-8") as f:
    for l in open(f"{data}/dev_queries.jsonl", encoding="utf-8"):
        if l.strip():
            f.write(clean(json.loads(l)["title"]) + "\n")
EOF
chmod a+r "$work"/*.tsv

as_pg "$bin/initdb" -D "$work/db" -A trust -U postgres -E UTF8 --locale=C.UTF-8 >/dev/null
as_pg "$bin/pg_ctl" -D "$work/db" -o "-k $work -c listen_addresses='' -p 54329" -l "$work/log" -w start >/dev/null
psql=(psql -h "$work" -p 54329 -U postgres -d postgres -X -q -v ON_ERROR_STOP=1)

"${psql[@]}" <<EOF
CREATE EXTENSION pg_trgm;
CREATE TABLE shows (id text, title text);
CREATE TABLE big (id text, title text);
CREATE TABLE q (title text);
\copy shows FROM '$work/shows.tsv'
\copy big FROM '$work/big.tsv'
\copy q FROM '$work/queries.tsv'
CREATE INDEX ON shows USING gin (title gin_trgm_ops);
CREATE INDEX ON big USING gin (title gin_trgm_ops);
ANALYZE;
CREATE TABLE timings (tbl text, us float8);
CREATE FUNCTION bench(tbl text, rounds int) RETURNS void LANGUAGE plpgsql AS \$\$
DECLARE r record; t0 timestamptz; i int;
BEGIN
  FOR i IN 1..rounds LOOP
    FOR r IN SELECT title FROM q LOOP
      t0 := clock_timestamp();
      EXECUTE format('SELECT count(*) FROM (SELECT id, similarity(title, \$1) s FROM %I WHERE title %% \$1 ORDER BY s DESC LIMIT 5) x', tbl) USING r.title;
      INSERT INTO timings VALUES (tbl, extract(epoch FROM clock_timestamp() - t0) * 1e6);
    END LOOP;
  END LOOP;
END \$\$;
EOF

version="$("${psql[@]}" -At -c "SHOW server_version")"
echo "PostgreSQL $version pg_trgm, GIN index on title, similarity threshold 0.3, top 5; server-side time per query"
for tbl in shows big; do
  # The planner picks a sequential scan for the small table (similarity() on every row);
  # the index is the fair comparison.
  "${psql[@]}" -c "SET enable_seqscan = off" -c "SELECT bench('$tbl', $rounds)" >/dev/null
  rows="$("${psql[@]}" -At -c "SELECT count(*) FROM $tbl")"
  "${psql[@]}" -At -F ' ' -c "SELECT count(*), round(percentile_cont(0.5) WITHIN GROUP (ORDER BY us)::numeric, 1), round(percentile_cont(0.99) WITHIN GROUP (ORDER BY us)::numeric, 1), round(max(us)::numeric, 1) FROM timings WHERE tbl = '$tbl'" |
    while read -r n p50 p99 max; do
      printf '  %-24s lookups=%-6s p50=%8s µs  p99=%8s µs  max=%8s µs\n' "$rows-show catalogue" "$n" "$p50" "$p99" "$max"
    done
done
