"""Photos kept for feedback and review, on disk under their content's sha256
(``<dir>/ab/abcdef....jpg``): the same photo twice is one file, and a file's name
proves its content. A photo is written, fsynced and renamed into place (and its
folder fsynced) before the database row that names it is committed, so an
acknowledged feedback never points at a missing or torn file, also after a crash
or a power cut."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

SHA256 = re.compile(r"[0-9a-f]{64}")
EXT = re.compile(r"[a-z]{2,4}")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PhotoStore:
    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o750)

    def path(self, sha256: str, ext: str) -> Path:
        if not SHA256.fullmatch(sha256) or not EXT.fullmatch(ext):
            raise ValueError(f"not a stored photo name: {sha256}.{ext}")
        return self.dir / sha256[:2] / f"{sha256}.{ext}"

    def put(self, data: bytes, ext: str) -> str:
        """Stores ``data`` durably; returns its sha256."""
        sha = hashlib.sha256(data).hexdigest()
        target = self.path(sha, ext)
        if target.exists():
            return sha
        folder = target.parent
        if not folder.is_dir():
            folder.mkdir(mode=0o750, exist_ok=True)
            fsync_dir(self.dir)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o640)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(folder)
        return sha

    def read(self, sha256: str, ext: str) -> bytes:
        return self.path(sha256, ext).read_bytes()
