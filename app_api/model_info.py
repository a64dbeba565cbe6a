"""What a loaded model is, whichever runtime runs it: its preprocessing, its identity
(``ModelInfo``) and the one error a model file that cannot be served raises. Without
torch, so a serving process on ONNX Runtime never imports it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from app_api.classes import FOOD11_CLASSES


class ModelLoadError(Exception):
    """A model file that cannot be served; the message says what to do."""


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model's input; stored with the model."""

    # [h, w] squashes the whole image to that size (the lab's Resize((224, 224)));
    # a single int resizes the shorter side to it, keeping the aspect ratio.
    resize: tuple[int, int] | int = (224, 224)
    crop: int = 224
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @classmethod
    def from_dict(cls, d: Mapping) -> Preprocessing:
        resize = d.get("resize", cls.resize)
        resize = int(resize) if isinstance(resize, int | float) else tuple(int(v) for v in resize)
        interp = str(d.get("interpolation", cls.interpolation))
        if interp not in ("bilinear", "bicubic", "nearest", "lanczos"):
            raise ModelLoadError(f"unknown interpolation {interp!r} in model metadata")
        return cls(
            resize=resize,
            crop=int(d.get("crop", cls.crop)),
            interpolation=interp,
            mean=tuple(float(v) for v in d.get("mean", cls.mean)),
            std=tuple(float(v) for v in d.get("std", cls.std)),
        )


@dataclass
class ModelInfo:
    """What /model shows and what the metrics label: where the model came from."""

    version: str
    sha256: str
    form: str
    arch: str
    path: str
    class_names: tuple[str, ...] = FOOD11_CLASSES
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    feature_dim: int | None = None
    device: str = "cpu"
    # "torch" or "onnx" (ONNX Runtime on CPU, app_api/inference.py).
    runtime: str = "torch"

    def as_dict(self) -> dict:
        """What /model publishes: the file's name and sha256, never its path on the host."""
        d = asdict(self)
        d["file"] = Path(d.pop("path")).name
        d["class_names"] = list(self.class_names)
        return d
