"""Predictions waiting for the person's "right" / "wrong": the answer and the photo,
kept for a short while only (``ttl`` seconds, at most ``keep`` of them), so a
feedback can keep the photo without the web app keeping every upload. A folder,
not memory, because the feedback may reach another gunicorn worker than the
prediction did; nothing here is durable, and the page says photos are not kept
unless the person answers."""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path

ID = re.compile(r"[0-9a-f]{32}")


class PendingStore:
    def __init__(self, directory: Path, ttl: float, keep: int):
        self.dir = Path(directory)
        self.ttl = ttl
        self.keep = keep
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def put(self, prediction_id: str, record: dict, photo: bytes) -> None:
        if not ID.fullmatch(prediction_id):
            raise ValueError(f"bad prediction id {prediction_id!r}")
        self._write(f"{prediction_id}.photo", photo)
        self._write(f"{prediction_id}.json", json.dumps(record).encode())
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
        """Drops expired entries, then the oldest beyond ``keep``."""
        now = time.time()
        notes = []
        with os.scandir(self.dir) as it:
            for e in it:
                if e.name.endswith(".json") and not e.name.startswith("."):
                    try:
                        notes.append((e.stat().st_mtime, e.name[:-5]))
                    except FileNotFoundError:
                        continue
        notes.sort()
        fresh = [(t, pid) for t, pid in notes if now - t <= self.ttl]
        for _, pid in notes[: len(notes) - len(fresh)] + fresh[: max(0, len(fresh) - self.keep)]:
            self.remove(pid)

    def _write(self, name: str, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self.dir / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
