"""What the web app does with an uploaded file: checks that it is an image (by its
content, never by the client's name or type), and, only when a setting asks, keeps
it under a generated name in a directory that never holds more than a set number."""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import tempfile
import time
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

log = logging.getLogger("app_web.uploads")

EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}


class NotAnImage(Exception):
    pass


def sniff_image(data: bytes) -> str:
    """The image format, read from the header only (no pixels decoded). Oversized
    images pass here: the API owns the pixel limit and says so in its own words."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                return im.format or "unknown"
    except Image.DecompressionBombError:
        return "unknown"
    except UnidentifiedImageError:
        raise NotAnImage("not an image") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise NotAnImage(f"unreadable image header ({e})") from None


class UploadStore:
    """Keeps the newest ``keep`` uploads as ``<time>-<random>.<ext>`` plus a JSON note
    of the answer; names sort by age, so pruning drops the oldest first."""

    def __init__(self, directory: Path, keep: int):
        self.dir = Path(directory)
        self.keep = keep
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def save(self, data: bytes, fmt: str, note: dict) -> str:
        upload_id = f"{time.time_ns():020d}-{secrets.token_hex(8)}"
        ext = EXTENSIONS.get(fmt, "bin")
        self._write(f"{upload_id}.{ext}", data)
        self._write(f"{upload_id}.json", json.dumps(note, sort_keys=True).encode())
        self.prune()
        return upload_id

    def _write(self, name: str, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.dir / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def ids(self) -> list[str]:
        return sorted({p.name.split(".", 1)[0] for p in self.dir.iterdir()
                       if not p.name.startswith(".")})

    def prune(self) -> None:
        ids = self.ids()
        for old in ids[: max(0, len(ids) - self.keep)]:
            for p in self.dir.glob(f"{old}.*"):
                p.unlink(missing_ok=True)
