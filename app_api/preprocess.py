"""Bytes -> the model's uint8 input, with every bad input named (never a 500).

Decoding is the CPU cost that bounds throughput on a GPU host and a large share of
it on a CPU host: JPEGs are decoded at reduced scale (draft mode) straight to about
the size the model needs, which makes large photos several times cheaper.

Every size a client controls is bounded before the memory it implies is allocated:
pixels and aspect ratio from the header, frames, decoded bytes after draft mode (the
real allocation), and the resized size (a 1x39000 PNG would otherwise be scaled to
256x9984000 pixels, 7.6 GB).
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app_api.model_info import Preprocessing

# Bytes per pixel that a decoded image of each mode holds (PIL's own storage).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 4, "PA": 4, "La": 4, "RGB": 4, "RGBA": 4,
               "RGBa": 4, "RGBX": 4, "CMYK": 4, "YCbCr": 4, "LAB": 4, "HSV": 4, "I": 4,
               "F": 4, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may make a worker allocate, beside the pixel count
    (``FOOD11_MAX_*``; the defaults also serve trusted callers such as drift references)."""

    max_aspect_ratio: float = 10.0
    max_frames: int = 256
    max_decoded_bytes: int = 256 * 1024 * 1024


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


def open_image(data: bytes, max_pixels: int, limits: Limits = Limits()) -> Image.Image:
    """Reads the header only: format, size, shape and frames are checked before any
    pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadInput(f"image has more than {max_pixels} pixels", 413) from None
    except UnidentifiedImageError:
        raise BadInput("not an image: the data is not in a format we can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise BadInput(f"corrupt image header ({e})") from None
    w, h = im.size
    if w * h > max_pixels:
        raise BadInput(f"image is {w}x{h} pixels, over the limit of {max_pixels}", 413)
    if w < 1 or h < 1:
        raise BadInput("image has no pixels")
    if max(w, h) > limits.max_aspect_ratio * min(w, h):
        raise BadInput(
            f"image is {w}x{h} pixels: one side is more than {limits.max_aspect_ratio:g} "
            "times the other (crop it closer to the food)", 422)
    try:
        frames = getattr(im, "n_frames", 1)
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise BadInput(f"corrupt image frames ({e})") from None
    if frames > limits.max_frames:
        raise BadInput(
            f"image has {frames} frames, over the limit of {limits.max_frames} "
            "(only the first is classified)", 413)
    return im


def _check_decoded_bytes(im: Image.Image, limits: Limits) -> None:
    w, h = im.size
    size = w * h * _MODE_BYTES.get(im.mode, 8)
    if size > limits.max_decoded_bytes:
        raise BadInput(
            f"image would decode to {size} bytes ({w}x{h} {im.mode}), over the limit of "
            f"{limits.max_decoded_bytes}", 413)


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


def prepare(im: Image.Image, pp: Preprocessing, limits: Limits = Limits()) -> np.ndarray:
    """Decodes, orients (EXIF), converts to RGB, resizes and centre-crops.
    Returns a (crop, crop, 3) uint8 array."""
    target = (pp.resize[1], pp.resize[0]) if isinstance(pp.resize, tuple) else (pp.resize,) * 2
    try:
        if im.format == "JPEG":
            im.draft("RGB", target)
        _check_decoded_bytes(im, limits)
        im.load()
        # In place: without an EXIF rotation the copy it would return is wasted work.
        ImageOps.exif_transpose(im, in_place=True)
        im = _to_rgb(im)
    except BadInput:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise BadInput(f"truncated or corrupt image ({e})") from None
    resample = RESAMPLE[pp.interpolation]
    if isinstance(pp.resize, tuple):
        size = (pp.resize[1], pp.resize[0])
    else:
        w, h = im.size
        s = pp.resize / min(w, h)
        size = (max(pp.crop, round(w * s)), max(pp.crop, round(h * s)))
    # Unreachable within the aspect-ratio bound; kept so that no future path (a new
    # preprocessing form, a changed limit) can resize to an unbounded size.
    most = round(max(target) ** 2 * limits.max_aspect_ratio) + 2 * max(target)
    if size[0] * size[1] > most:
        raise BadInput(f"image would be resized to {size[0]}x{size[1]} pixels, over {most}", 413)
    if im.size != size:
        im = im.resize(size, resample, reducing_gap=3.0)
    w, h = im.size
    c = pp.crop
    left, top = (w - c) // 2, (h - c) // 2
    if (w, h) != (c, c):
        im = im.crop((left, top, left + c, top + c))
    return np.array(im, dtype=np.uint8)


def image_from_bytes(data: bytes, pp: Preprocessing, max_pixels: int,
                     limits: Limits = Limits()) -> np.ndarray:
    """The raw-body form (``Content-Type: image/*``)."""
    if not data:
        raise BadInput("the body is empty: send the image's bytes")
    return prepare(open_image(data, max_pixels, limits), pp, limits)


def image_from_base64(text: str, pp: Preprocessing, max_pixels: int,
                      limits: Limits = Limits()) -> np.ndarray:
    return image_from_bytes(decode_base64(text), pp, max_pixels, limits)
