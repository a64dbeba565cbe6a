"""Damaged images of every format we read (random byte flips and cuts, fixed seed) are a
BadInput (a 4xx) or a picture, never another exception (which would be a 500)."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
from PIL import Image

from app_api.model import Preprocessing
from app_api.preprocess import BadInput, image_from_base64
from tests.images import b64, encode, photo_bytes, textured

PP = Preprocessing.from_dict({"resize": 256, "crop": 224, "interpolation": "bicubic"})


def _seeds() -> dict[str, bytes]:
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Camera"
    return {
        "jpeg": photo_bytes(),
        "jpeg_exif": encode(textured((200, 150)), quality=80, exif=exif.tobytes()),
        "png": encode(textured((120, 90)), "PNG"),
        "gif": encode(textured((60, 40)).quantize(64), "GIF"),
        "tiff": encode(textured((60, 40)), "TIFF"),
        "webp": encode(textured((120, 90)), "WEBP"),
        "bmp": encode(textured((60, 40)), "BMP"),
    }


@pytest.mark.parametrize("fmt", list(_seeds()))
def test_damaged_images_are_bad_input_or_a_picture(fmt):
    data = _seeds()[fmt]
    rng = random.Random(fmt)
    outcomes = {"bad": 0, "ok": 0}
    for _ in range(120):
        d = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            d[rng.randrange(len(d))] = rng.randrange(256)
        if rng.random() < 0.2:
            d = d[: rng.randrange(1, len(d))]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                out = image_from_base64(b64(bytes(d)), PP, 4_000_000)
            except BadInput as e:
                assert 400 <= e.status < 500 and str(e)
                outcomes["bad"] += 1
                continue
        assert out.shape == (224, 224, 3) and out.dtype == np.uint8
        outcomes["ok"] += 1
    assert outcomes["bad"] + outcomes["ok"] == 120
