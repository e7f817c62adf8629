#!/bin/sh
# The long form of the crash fault test (tests/fault_crash.rs): ≥ 20 SIGKILLs of the real
# binary while 3,000 webhooks arrive and a backfill reads 1,000 history rows. Override any of
# the figures through the environment; PLEXSYNC_SOAK_SEED=<n> replays a printed seed.
#
#   scripts/crash-soak.sh                 # 25 kills, 3000 webhooks, 1000 rows
#   PLEXSYNC_SOAK_SEED=42 scripts/crash-soak.sh
set -eu
cd "$(dirname "$0")/.."
export PLEXSYNC_SOAK_KILLS="${PLEXSYNC_SOAK_KILLS:-25}"
export PLEXSYNC_SOAK_WEBHOOKS="${PLEXSYNC_SOAK_WEBHOOKS:-3000}"
export PLEXSYNC_SOAK_ROWS="${PLEXSYNC_SOAK_ROWS:-1000}"
exec cargo test --release --test fault_crash -- --nocapture
