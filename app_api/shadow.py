"""The shadow log: what this instance answered to requests Nginx marked with
``X-Shadow-Id`` (the shadow stage of a canary rollout mirrors a sample of production's
requests to the canary, both carrying the same id). The controller joins production's
and the canary's logs on the id to measure how often the two models agree
(gourmetgram.canary.shadow).

One JSON line per answer, appended to ``shadow.jsonl`` in the instance's shadow folder,
which all its gunicorn workers share. Safe with several workers without a lock on the
hot path: each line is one ``write()`` on an ``O_APPEND`` descriptor, which the kernel
appends as a whole (lines are far below a page). Bounded: a worker that finds the file
over ``max_bytes`` renames it to ``shadow.jsonl.1`` (replacing the older one) under an
flock, so the folder holds at most about twice ``max_bytes``; a worker whose open file
was rotated away reopens the new one.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from app_api.filelock import exclusive

LOG_NAME = "shadow.jsonl"
HEADER = "x-shadow-id"
# Nginx's $request_id: 32 hex digits. Anything else is not recorded (never a client's text).
ID_PATTERN = re.compile(r"[0-9a-f]{32}")


class ShadowLog:
    def __init__(self, folder: Path, max_bytes: int):
        self.folder = Path(folder)
        self.path = self.folder / LOG_NAME
        self.max_bytes = max_bytes
        self.fd: int | None = None
        self.folder.mkdir(parents=True, exist_ok=True)

    def _open(self) -> int:
        if self.fd is None:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self.fd

    def record(self, shadow_id: str, class_name: str, confidence: float) -> bool:
        """Appends one answer; False (nothing written) for an id that is not Nginx's."""
        if not ID_PATTERN.fullmatch(shadow_id):
            return False
        line = json.dumps({"id": shadow_id, "t": round(time.time(), 3), "class": class_name,
                           "p": round(confidence, 4)}) + "\n"
        fd = self._open()
        os.write(fd, line.encode())
        size = os.fstat(fd).st_size
        if size > self.max_bytes:
            self._rotate()
        else:
            self._follow()
        return True

    def _follow(self) -> None:
        """Reopens when another worker rotated the file this descriptor writes to."""
        try:
            same = os.stat(self.path).st_ino == os.fstat(self.fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            self.close()

    def _rotate(self) -> None:
        with exclusive(self.folder / ".rotate.lock"):
            try:
                if os.stat(self.path).st_size > self.max_bytes:
                    os.replace(self.path, self.path.with_name(LOG_NAME + ".1"))
            except FileNotFoundError:
                pass
        self.close()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def read_records(folder: Path, since: float = 0.0) -> dict[str, tuple[float, str, float]]:
    """id -> (time, class, confidence) of the answers at or after ``since`` in
    ``folder``'s log and its rotated predecessor. A torn or foreign line is skipped."""
    folder = Path(folder)
    out: dict[str, tuple[float, str, float]] = {}
    for path in (folder / (LOG_NAME + ".1"), folder / LOG_NAME):
        try:
            text = path.read_text(errors="replace")
        except (FileNotFoundError, PermissionError):
            continue
        for line in text.splitlines():
            try:
                rec = json.loads(line)
                if rec["t"] >= since and ID_PATTERN.fullmatch(rec["id"]):
                    out[rec["id"]] = (float(rec["t"]), str(rec["class"]), float(rec["p"]))
            except (ValueError, KeyError, TypeError):
                continue
    return out
