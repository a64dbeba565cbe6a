"""Images for the drift tests, made with PIL so a clone works anywhere: one in-
distribution family (plated "dishes": blobs of food colours on a plate over a table)
and the shifted versions the lab's drift scenario stands for."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

SIZE = 256
FOOD_COLOURS = (
    (200, 140, 60), (170, 60, 40), (90, 140, 50), (230, 200, 120), (120, 70, 40),
    (240, 230, 210), (200, 90, 30), (60, 100, 40),
)


def dish(seed: int) -> Image.Image:
    """A plate with a few food-coloured blobs on a wooden-ish table, textured."""
    rng = np.random.default_rng(seed)
    table = rng.integers(60, 160, 3)
    small = np.clip(table + rng.normal(0, 18, (8, 8, 3)), 0, 255).astype(np.uint8)
    im = Image.fromarray(small, "RGB").resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    d = ImageDraw.Draw(im)
    c = SIZE / 2 + rng.normal(0, 12, 2)
    r = SIZE * rng.uniform(0.36, 0.46)
    d.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=(235, 235, 230), outline=(200, 200, 200))
    for _ in range(int(rng.integers(3, 8))):
        col = np.array(FOOD_COLOURS[int(rng.integers(len(FOOD_COLOURS)))])
        col = tuple(int(v) for v in np.clip(col + rng.normal(0, 15, 3), 0, 255))
        p = c + rng.normal(0, r * 0.35, 2)
        a, b = rng.uniform(0.12, 0.3, 2) * r
        d.ellipse([p[0] - a, p[1] - b, p[0] + a, p[1] + b], fill=col)
    arr = np.asarray(im.filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float32)
    arr += rng.normal(0, 6, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def greyscale(im: Image.Image) -> Image.Image:
    return im.convert("L").convert("RGB")


def inverted(im: Image.Image) -> Image.Image:
    return ImageOps.invert(im)


def blurred(im: Image.Image) -> Image.Image:
    return im.filter(ImageFilter.GaussianBlur(8))


def noise(im: Image.Image) -> Image.Image:
    """Same size, pure uniform noise: nothing of the dish left."""
    seed = int(np.asarray(im, dtype=np.uint32).sum()) % (2**32)
    arr = np.random.default_rng(seed).integers(0, 256, (im.height, im.width, 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB")


SHIFTS = {"greyscale": greyscale, "inverted": inverted, "blurred": blurred, "noise": noise}


def features(model, images: list[Image.Image], batch: int = 16) -> np.ndarray:
    """The serving preprocessing and forward pass (as build-drift-reference does)."""
    from app_api.preprocess import prepare

    pp = model.info.preprocessing
    out = []
    for i in range(0, len(images), batch):
        x = np.stack([prepare(im, pp) for im in images[i : i + batch]])
        out.append(model.infer(x)[1])
    return np.concatenate(out)
