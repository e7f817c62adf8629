#!/bin/sh
# Run the daemon under valgrind's callgrind, for a bench's BENCH_BIN: instructions counted, not
# seconds, so two builds compare whatever else the machine is doing.
#
#   BENCH_N=3000 BENCH_BIN=scripts/callgrind-daemon.sh CG_BIN=target/release/plexsync \
#     CG_OUT=/tmp/cg target/release/deps/webhook_ingest-<hash> --bench
#   callgrind_annotate /tmp/cg/plexsync-<pid>.out | grep 'PROGRAM TOTALS'
#
# Every `plexsync run` gets its own file (the bench starts the daemon twice: store on disk,
# then on tmpfs); other subcommands run as they are. The count includes start-up (~40M, most of
# it loading the system's CA certificates), so compare builds at the same BENCH_N.
set -eu
bin=${CG_BIN:-target/release/plexsync}
out=${CG_OUT:-/tmp/cg}
if [ "${1:-}" = "run" ]; then
  mkdir -p "$out"
  exec valgrind --tool=callgrind --callgrind-out-file="$out/plexsync-%p.out" "$bin" "$@" 2>/dev/null
fi
exec "$bin" "$@"
