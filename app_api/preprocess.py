"""Bytes -> the model's uint8 input, with every bad input named (never a 500).

Decoding is the CPU cost that bounds throughput on a GPU host and a large share of
it on a CPU host: JPEGs are decoded at reduced scale (draft mode) straight to about
the size the model needs, which makes large photos several times cheaper.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app_api.model import Preprocessing

RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


class BadInput(Exception):
    """Client error: ``status`` is the HTTP code, the message is the ``detail``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def decode_base64(text: str) -> bytes:
    """The lab's ``{"image": "<base64>"}``; a ``data:...;base64,`` prefix is accepted too."""
    if not text or not text.strip():
        raise BadInput("'image' is empty: send a base64-encoded JPEG or PNG")
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadInput("'image' is not valid base64") from None
    if not data:
        raise BadInput("'image' decodes to zero bytes")
    return data


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Reads the header only: format and size are checked before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadInput(f"image has more than {max_pixels} pixels", 413) from None
    except UnidentifiedImageError:
        raise BadInput("not an image: the data is not in a format we can read") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise BadInput(f"corrupt image header ({e})") from None
    w, h = im.size
    if w * h > max_pixels:
        raise BadInput(f"image is {w}x{h} pixels, over the limit of {max_pixels}", 413)
    if w < 1 or h < 1:
        raise BadInput("image has no pixels")
    return im


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # Scaled by the format's range, not stretched to min..max: a dark 16-bit photo
        # stays dark, as its 8-bit export would.
        arr = np.asarray(im, dtype=np.float32)
        hi = float(arr.max()) if arr.size else 0.0
        if im.mode == "F" and hi <= 1.0:
            scale = 255.0
        elif im.mode.startswith("I;16") or 255.0 < hi <= 65535.0:
            scale = 255.0 / 65535.0
        elif hi <= 255.0:
            scale = 1.0
        else:
            scale = 255.0 / hi
        arr = np.clip(np.rint(arr * scale), 0, 255)
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    return im.convert("RGB")


def prepare(im: Image.Image, pp: Preprocessing) -> np.ndarray:
    """Decodes, orients (EXIF), converts to RGB, resizes and centre-crops.
    Returns a (crop, crop, 3) uint8 array."""
    target = (pp.resize[1], pp.resize[0]) if isinstance(pp.resize, tuple) else (pp.resize,) * 2
    try:
        if im.format == "JPEG":
            im.draft("RGB", target)
        im.load()
        im = ImageOps.exif_transpose(im)
        im = _to_rgb(im)
    except BadInput:
        raise
    except (OSError, SyntaxError, ValueError) as e:
        raise BadInput(f"truncated or corrupt image ({e})") from None
    resample = RESAMPLE[pp.interpolation]
    if isinstance(pp.resize, tuple):
        size = (pp.resize[1], pp.resize[0])
    else:
        w, h = im.size
        s = pp.resize / min(w, h)
        size = (max(pp.crop, round(w * s)), max(pp.crop, round(h * s)))
    if im.size != size:
        im = im.resize(size, resample, reducing_gap=3.0)
    w, h = im.size
    c = pp.crop
    left, top = (w - c) // 2, (h - c) // 2
    if (w, h) != (c, c):
        im = im.crop((left, top, left + c, top + c))
    return np.array(im, dtype=np.uint8)


def image_from_base64(text: str, pp: Preprocessing, max_pixels: int) -> np.ndarray:
    return prepare(open_image(decode_base64(text), max_pixels), pp)
