#!/usr/bin/env bash
# Old and new side by side on one machine, in one run: builds OLD_REV's release binary in a
# scratch worktree, then runs each benchmark alternately against the old binary
# (BENCH_BIN=…) and this checkout's, ROUNDS times, so both see the same machine load.
#
#   scripts/side-by-side.sh OLD_REV [bench …]   (default benches: burst webhook_ingest
#                                                 first_start footprint backfill export)
# env: ROUNDS (2), OUT (side_by_side.log), OLD_BIN (an old binary already built: no build),
# plus each bench's own BENCH_* variables.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  echo "usage: scripts/side-by-side.sh OLD_REV [bench …]" >&2
  exit 1
fi
old_rev=$1
shift
benches=("$@")
[ ${#benches[@]} -gt 0 ] || benches=(burst webhook_ingest first_start footprint backfill export)
rounds=${ROUNDS:-2}
out=${OUT:-side_by_side.log}
if [ -n "${OLD_BIN:-}" ]; then
  # Already built (e.g. by an earlier run): OLD_REV only labels it.
  old_bin=$(realpath "$OLD_BIN")
else
  old_dir=$(mktemp -d)/old
  trap 'git worktree remove --force "$old_dir" >/dev/null 2>&1 || true' EXIT
  git worktree add --detach -q "$old_dir" "$old_rev"
  old_target=$(realpath -m "${OLD_TARGET:-${CARGO_TARGET_DIR:-target}/side-by-side-old}")
  echo "building $old_rev into $old_target" >&2
  (cd "$old_dir" && CARGO_TARGET_DIR="$old_target" cargo build --release --locked --bin plexsync -q)
  old_bin="$old_target/release/plexsync"
fi
cargo build --release --locked --benches -q
{
  echo "# side by side: old $(git rev-parse --short "$old_rev") vs new $(git rev-parse --short HEAD), $(nproc) cores, $(date -u +%FT%TZ)"
  for b in "${benches[@]}"; do
    for r in $(seq 1 "$rounds"); do
      case "$b" in
        footprint | first_start)
          # These compare builds themselves, interleaved run by run.
          echo "## $b round $r: OLD ($old_rev) and NEW (HEAD) — load $(cut -d' ' -f1-3 /proc/loadavg)"
          BENCH_OLD_BIN="$old_bin" cargo bench -q --locked --bench "$b" 2>&1 || echo "(failed: $?)"
          ;;
        *)
          echo "## $b round $r: OLD ($old_rev) — load $(cut -d' ' -f1-3 /proc/loadavg)"
          BENCH_BIN="$old_bin" cargo bench -q --locked --bench "$b" 2>&1 || echo "(old failed: $?)"
          echo "## $b round $r: NEW (HEAD) — load $(cut -d' ' -f1-3 /proc/loadavg)"
          cargo bench -q --locked --bench "$b" 2>&1 || echo "(new failed: $?)"
          ;;
      esac
    done
  done
} | tee "$out"
