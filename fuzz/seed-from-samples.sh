#!/bin/sh
# Copies the real Plex captures of ../shared/plex-samples into the working corpus dirs
# fuzz/work/<target>/ (gitignored). The captures are third-party data and never go into the
# repository; the committed seeds in fuzz/corpus/<target>/ are hand-written look-alikes.
#
# Usage: fuzz/seed-from-samples.sh [path/to/plex-samples]
set -eu

here=$(cd "$(dirname "$0")" && pwd)
samples=${1:-"$here/../../shared/plex-samples"}
if [ ! -d "$samples" ]; then
    echo "plex-samples not found at $samples (pass its path as the first argument)" >&2
    exit 1
fi
work="$here/work"
mkdir -p "$work/webhook_json" "$work/webhook_multipart" "$work/plex_xml"

# webhook_json: every webhook JSON payload as is.
for f in "$samples"/webhook/*.json; do
    cp "$f" "$work/webhook_json/sample-$(basename "$f")"
done

# webhook_multipart: the harness reads the Content-Type value from the first line, then the
# body. The one real raw body goes in with its own header, in LF (as stored) and CRLF framing;
# every JSON payload goes in wrapped in a CRLF body.
ct=$(sed -n 's/^Content-Type: *//p' "$samples/webhook/episode_plexagent_media.pause_shared-user.headers.txt" | tr -d '\r')
body="$samples/webhook/episode_plexagent_media.pause_shared-user.multipart-body.txt"
{ printf '%s\n' "$ct"; cat "$body"; } > "$work/webhook_multipart/sample-raw-body-lf.txt"
{ printf '%s\r\n' "$ct"; sed 's/$/\r/' "$body"; } > "$work/webhook_multipart/sample-raw-body-crlf.txt"
b=plexsync-seed-boundary
for f in "$samples"/webhook/*.json; do
    {
        printf 'multipart/form-data; boundary=%s\r\n' "$b"
        printf -- '--%s\r\nContent-Disposition: form-data; name="payload"\r\nContent-Type: application/json\r\n\r\n' "$b"
        cat "$f"
        printf '\r\n--%s--\r\n' "$b"
    } > "$work/webhook_multipart/sample-wrapped-$(basename "$f" .json).txt"
done

# plex_xml: every XML answer (history, metadata, server).
for f in "$samples"/*/*.xml; do
    cp "$f" "$work/plex_xml/sample-$(basename "$f")"
done

for t in webhook_json webhook_multipart plex_xml; do
    echo "$work/$t: $(ls "$work/$t" | wc -l) files"
done
