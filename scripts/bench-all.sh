#!/usr/bin/env bash
# Runs every benchmark of the workspace against the release binary and prints the figures that
# README.md's "Performance and reliability" section shows, with the machine they came from.
#
#   scripts/bench-all.sh            # all benches, default sizes
#   RUNS=2 scripts/bench-all.sh     # each bench twice (figures vary run to run)
#   BENCH_N=2000 BENCH_ROWS=10000 scripts/bench-all.sh   # smaller, for a quick check
#
# Needs ../shared/plex-samples beside the checkout (the webhook bench posts a real capture),
# `strip` (binutils) for the stripped size. Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-1}"
BENCHES=(footprint webhook_ingest backfill export)

echo "== machine"
echo "date (UTC):   $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "cpu:          $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "memory:       $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
echo "kernel:       $(uname -sr)"
echo "rustc:        $(rustc --version)"
echo "commit:       $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== build (cargo bench --no-run: the release profile, the binary and the benches)"
cargo bench --locked --no-run "${BENCHES[@]/#/--bench=}" 2>&1 | grep -v '^ *\(Compiling\|Executable\)' || true

for run in $(seq 1 "$RUNS"); do
    for b in "${BENCHES[@]}"; do
        echo "== $b (run $run of $RUNS)"
        cargo bench --locked --bench "$b" 2>&1 | grep -v '^ *\(Finished\|Running\|Compiling\)'
    done
done
echo "== done; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
