"""Test images made with PIL, so a clone works anywhere (the shared photos are used
when present)."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

# ../shared/data beside the checkout; GOURMETGRAM_SHARED_DATA points elsewhere (a worktree).
SHARED_DATA = Path(
    os.environ.get("GOURMETGRAM_SHARED_DATA")
    or Path(__file__).resolve().parent.parent.parent / "shared" / "data"
)
SMALL_PHOTO = SHARED_DATA / "test_image_small.jpeg"
LARGE_PHOTO = SHARED_DATA / "test_image_large.jpeg"


def encode(im: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def textured(size=(400, 300), seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A smooth random colour field: photo-like enough to exercise the codecs."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    im = Image.fromarray(small, "RGB").resize(size, Image.Resampling.BICUBIC)
    return im.convert(mode) if mode != "RGB" else im


def photo_bytes(large: bool = False) -> bytes:
    path = LARGE_PHOTO if large else SMALL_PHOTO
    if path.exists():
        return path.read_bytes()
    return encode(textured((1280, 1280) if large else (400, 300)), quality=90)
