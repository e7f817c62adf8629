#!/usr/bin/env python3
"""An example plexsync `exec` matcher (protocol 1). Python 3, standard library only.

It answers a `match` request in two ways, in this order:

1. A user-editable table (a JSON file, path given as the first argument): Plex titles
   (compared case-insensitively, surrounding spaces ignored) to tracker show ids, e.g.
   {"Cool Couple": "1234", "Engrenages": 987}. A hit is a definite answer, confidence 1.0,
   method "exec:table" — you said so.
2. The exact title, lowercased, against the tracker's catalogue (title, original_title and
   aliases), which the plugin sends in `catalogue` notifications because the hello asks for
   it. One show with that title (and, when both sides have a year, a year within one of the
   query's) is a definite answer at 0.95 ("exec:exact_title"); several are candidates for a
   person to choose from; none is "no_match", so the next matcher gets its turn.

Logs go to stderr (plexsync forwards them to its log); stdout carries protocol lines only.
The script exits when its stdin closes, which is how plexsync asks it to stop.
"""

import json
import sys

NAME = "title_table"


def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def log(message):
    print(message, file=sys.stderr, flush=True)


def norm(text):
    return " ".join(str(text or "").lower().split())


def load_table(path):
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object of title -> show id")
    return {norm(k): str(v) for k, v in raw.items()}


class Matcher:
    def __init__(self, table):
        self.table = table
        self.by_title = {}

    def set_catalogue(self, shows):
        by_title = {}
        for show in shows:
            names = [show.get("title"), show.get("original_title")] + list(show.get("aliases") or [])
            for name in {norm(n) for n in names if n}:
                by_title.setdefault(name, []).append(show)
        self.by_title = by_title
        log(f"catalogue of {len(shows)} shows indexed")

    def match(self, query):
        title = norm(query.get("title"))
        if title in self.table:
            return {"outcome": "definite", "show_id": self.table[title], "confidence": 1.0,
                    "method": "exec:table"}
        shows = self.by_title.get(title, [])
        year = query.get("year")
        if year is not None:
            shows = [s for s in shows if s.get("year") is None or abs(s["year"] - year) <= 1]
        if len(shows) == 1:
            return {"outcome": "definite", "show_id": shows[0]["id"], "confidence": 0.95,
                    "method": "exec:exact_title"}
        if shows:
            return {"outcome": "candidates", "candidates": [
                {"show_id": s["id"], "score": 0.8, "method": "exec:exact_title"} for s in shows]}
        return {"outcome": "no_match"}


def main():
    table = load_table(sys.argv[1]) if len(sys.argv) > 1 else {}
    matcher = Matcher(table)
    send({"hello": "plexsync-matcher", "protocol": 1, "name": NAME, "catalogue": True})
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
        except ValueError as e:
            log(f"ignoring a line that is not JSON: {e}")
            continue
        method, msg_id = msg.get("method"), msg.get("id")
        try:
            if method == "catalogue":
                matcher.set_catalogue(msg["params"]["shows"])
            elif method == "match":
                send({"id": msg_id, "result": matcher.match(msg["params"])})
            elif msg_id is not None:
                send({"id": msg_id, "error": {"message": f"unknown method {method!r}",
                                              "transient": False}})
        except Exception as e:  # a bug here must not kill the matcher: report it and go on
            log(f"{method} failed: {e!r}")
            if msg_id is not None:
                send({"id": msg_id, "error": {"message": repr(e), "transient": False}})


if __name__ == "__main__":
    main()
