"""Predictions waiting for the person's "right" / "wrong": the answer and the photo,
kept for a short while only (``ttl`` seconds, at most ``keep`` of them and
``max_bytes`` of photos), so a feedback can keep the photo without the web app
keeping every upload. A folder, because the feedback may reach another gunicorn
worker than the prediction did; deployed, it is under the unit's RuntimeDirectory
(tmpfs: memory, gone at reboot). Nothing here is durable, and the page says photos
are not kept unless the person answers."""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path

ID = re.compile(r"[0-9a-f]{32}")
# Each worker prunes on its 1st, 26th, ... write, so the bounds may be exceeded by at most
# this many entries per worker between two scans.
PRUNE_EVERY = 25


class PendingStore:
    def __init__(self, directory: Path, ttl: float, keep: int, max_bytes: int):
        self.dir = Path(directory)
        self.ttl = ttl
        self.keep = keep
        self.max_bytes = max_bytes
        self._puts = 0
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def put(self, prediction_id: str, record: dict, photo: bytes) -> None:
        if not ID.fullmatch(prediction_id):
            raise ValueError(f"bad prediction id {prediction_id!r}")
        self._write(f"{prediction_id}.photo", photo)
        self._write(f"{prediction_id}.json", json.dumps(record).encode())
        self._puts += 1
        if self._puts % PRUNE_EVERY == 1:  # a scan costs ~30 us per entry: not on every write
            self.prune()

    def get(self, prediction_id: str) -> tuple[dict, bytes] | None:
        """The record and photo, or None when unknown or expired."""
        if not ID.fullmatch(prediction_id):
            return None
        note = self.dir / f"{prediction_id}.json"
        try:
            if time.time() - note.stat().st_mtime > self.ttl:
                return None
            record = json.loads(note.read_bytes())
            photo = (self.dir / f"{prediction_id}.photo").read_bytes()
        except (OSError, ValueError):
            return None
        return record, photo

    def remove(self, prediction_id: str) -> None:
        for suffix in (".json", ".photo"):
            (self.dir / f"{prediction_id}{suffix}").unlink(missing_ok=True)

    def prune(self) -> None:
        """Drops expired entries (and stray files), then the oldest beyond ``keep`` or
        ``max_bytes``."""
        now = time.time()
        entries: dict[str, list] = {}  # id -> [time, photo bytes, has note]
        with os.scandir(self.dir) as it:
            for e in it:
                pid, _, suffix = e.name.partition(".")
                try:
                    st = e.stat()
                except FileNotFoundError:
                    continue
                if not pid:  # a temporary file (".tmp-..."): stray once it is old
                    if now - st.st_mtime > self.ttl:
                        Path(e.path).unlink(missing_ok=True)
                    continue
                entry = entries.setdefault(pid, [st.st_mtime, 0, False])
                entry[0] = min(entry[0], st.st_mtime)
                if suffix == "photo":
                    entry[1] = st.st_size
                elif suffix == "json":
                    entry[2] = True
        ordered = sorted(entries.items(), key=lambda kv: kv[1][0], reverse=True)
        kept, total = 0, 0
        for pid, (t, size, has_note) in ordered:  # newest first
            stale = now - t > self.ttl or (not has_note and now - t > 60)
            if stale or kept >= self.keep or total + size > self.max_bytes:
                self.remove(pid)
                continue
            kept, total = kept + 1, total + size

    def _write(self, name: str, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self.dir / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
