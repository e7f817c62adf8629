#!/usr/bin/env bash
# Make the upgrade fixture of a release: tests/fixtures/store-RELEASE/ holding a store written
# by that release's own binary (plexsync.redb), its key (plexsync.key), the config it ran with
# (plexsync.toml) and manifest.json (what the store holds). tests/upgrade.rs opens every
# fixture with the current build and checks the manifest.
#
#   scripts/make-fixture-store.sh RELEASE [COMMIT]      # COMMIT defaults to HEAD
#
# The release's code is checked out in a separate git worktree; scripts/fixture-store/
# generate.rs (from THIS checkout) is copied into its tests/ and run there with `cargo test`,
# so the release's binary and its tests/support fakes (fake Plex, fake tracker) make the
# store. If the release changed tests/support or the CLI, adapt generate.rs first; it is run
# once per release.
#
# Environment: WORKTREE (use this checkout of COMMIT instead of a temporary one; kept),
# FIXTURE_TARGET_DIR (cargo's target folder for the release build; default inside the
# worktree), CARGO_BUILD_JOBS as usual.
set -euo pipefail

release=${1:?usage: scripts/make-fixture-store.sh RELEASE [COMMIT]}
repo=$(git rev-parse --show-toplevel)
commit=$(git -C "$repo" rev-parse --verify "${2:-HEAD}^{commit}")
out="$repo/tests/fixtures/store-$release"
generator="$repo/scripts/fixture-store/generate.rs"

if [ -e "$out" ]; then
    echo "$out exists: a release's fixture is made once; remove it to make it again" >&2
    exit 1
fi

own_worktree=
if [ -n "${WORKTREE:-}" ]; then
    wt=$WORKTREE
    if [ "$(git -C "$wt" rev-parse HEAD)" != "$commit" ]; then
        echo "$wt is not at $commit" >&2
        exit 1
    fi
else
    wt_parent=$(mktemp -d)
    wt=$wt_parent/plexsync-$release
    git -C "$repo" worktree add --detach "$wt" "$commit"
    own_worktree=1
fi
test_file="$wt/tests/generate_fixture_store.rs"
cleanup() {
    rm -f "$test_file"
    if [ -n "$own_worktree" ]; then
        git -C "$repo" worktree remove --force "$wt"
        rmdir "$wt_parent"
    fi
}
trap cleanup EXIT

cp "$generator" "$test_file"
mkdir -p "$(dirname "$out")"
tmp_out=$(mktemp -d)
(
    cd "$wt"
    CARGO_TARGET_DIR="${FIXTURE_TARGET_DIR:-$wt/target}" \
        FIXTURE_OUT="$tmp_out/store" FIXTURE_RELEASE="$release" FIXTURE_COMMIT="$commit" \
        cargo test --locked --test generate_fixture_store -- --nocapture
)
mv "$tmp_out/store" "$out"
rmdir "$tmp_out"
chmod 0600 "$out/plexsync.key"
echo "wrote $out:"
ls -l "$out"
