"""Where a drift reference's features come from: the user's images
(``gourmetgram build-drift-reference``), or the first N production predictions of an
API instance (bootstrapping, when no reference is configured).

A bootstrapped reference lives in the instance's state folder, shared by its gunicorn
workers: each worker appends the features of the predictions it served to one samples
file under an exclusive ``flock``; the worker whose append completes N builds and
calibrates the reference (``drift.build_reference``, as for images) while still holding
the lock, writes it to a temporary file and renames it into place, so every other
worker either waits on the lock or finds the finished file, never half of one. Files
are named by the model's sha256: a new model bootstraps its own reference, and a model
rolled back to finds its old one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from app_api.drift import DriftReference, DriftReferenceError, load_for_model
from app_api.filelock import exclusive

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".jfif"}
)


def find_images(folder: Path) -> list[Path]:
    """Image files at any depth (by suffix, case-insensitive), in a stable order."""
    return sorted(
        p for p in Path(folder).rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def features_of_images(model, paths: list[Path], batch: int = 16, max_pixels: int = 40_000_000):
    """(features (N, D), skipped [(path, why)]): the serving preprocessing and forward
    pass, so the reference sees exactly what the API will see."""
    from app_api.preprocess import BadInput, open_image, prepare

    pp = model.info.preprocessing
    feats, skipped, pending = [], [], []

    def flush():
        if pending:
            _, f = model.infer(np.stack(pending))
            if f is None:
                raise DriftReferenceError("this model gives no penultimate features")
            feats.append(f)
            pending.clear()

    for p in paths:
        try:
            pending.append(prepare(open_image(p.read_bytes(), max_pixels), pp))
        except (BadInput, OSError) as e:
            skipped.append((p, str(e)))
            continue
        if len(pending) >= batch:
            flush()
    flush()
    dim = model.info.feature_dim or 0
    return (np.concatenate(feats) if feats else np.zeros((0, dim))), skipped


def stored_reference_path(folder: Path, model_sha256: str) -> Path:
    """Where an instance's state folder keeps the reference for one model: bootstrapped
    there, or put there by ``build-drift-reference --state-dir`` (the deploy)."""
    return Path(folder) / f"drift-reference-{model_sha256[:16]}.npz"


class BootstrapStore:
    """One instance's bootstrapped reference for one model, on disk."""

    def __init__(self, folder: Path, model_sha256: str, feature_dim: int, samples: int):
        self.folder = Path(folder)
        self.sha256, self.dim, self.target = model_sha256, int(feature_dim), int(samples)
        key = model_sha256[:16]
        self.reference_path = stored_reference_path(self.folder, model_sha256)
        self.samples_path = self.folder / f"drift-bootstrap-{key}-{self.dim}d.f32"
        self.lock_path = self.folder / f"drift-bootstrap-{key}.lock"
        self._row_bytes = 4 * self.dim
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.lock_path.touch(exist_ok=True)
        except OSError as e:
            raise DriftReferenceError(
                f"drift state folder {self.folder} is not writable ({e.strerror}): set "
                "FOOD11_STATE_DIR to a folder this service may write, or "
                "FOOD11_DRIFT_BOOTSTRAP_SAMPLES=0 to turn drift detection off"
            ) from None

    def _locked(self):
        return exclusive(self.lock_path)

    def collected(self) -> int:
        """Whole rows in the samples file (a row torn by a crash does not count)."""
        try:
            size = self.samples_path.stat().st_size
        except FileNotFoundError:
            return self.target if self.reference_path.exists() else 0
        return min(self.target, size // self._row_bytes)

    def load(self) -> DriftReference | None:
        """The finished reference, or None. One that no longer loads (corrupt, or
        written by another format version) is removed, so bootstrapping starts over."""
        if not self.reference_path.exists():
            return None
        try:
            return load_for_model(self.reference_path, self.sha256, self.dim)
        except DriftReferenceError as e:
            log.warning("bootstrapped drift reference unusable, collecting again: %s", e)
            with self._locked():
                self.reference_path.unlink(missing_ok=True)
            return None

    def add(self, x: np.ndarray, build: Callable[[np.ndarray], DriftReference]) -> int:
        """Appends one feature row; the append that completes the target builds the
        reference (``build(rows)``) before releasing the lock. Returns the row count."""
        row = np.asarray(x, dtype=np.float32).reshape(-1)
        if row.shape != (self.dim,):
            raise ValueError(f"feature row of shape {row.shape}, expected ({self.dim},)")
        with self._locked():
            if self.reference_path.exists():
                return self.target
            with open(self.samples_path, "ab") as f:
                size = f.tell()
                whole = size - size % self._row_bytes
                if whole != size:
                    f.truncate(whole)
                count = whole // self._row_bytes
                if count < self.target:
                    f.write(row.tobytes())
                    count += 1
            if count >= self.target:
                rows = np.fromfile(self.samples_path, dtype=np.float32,
                                   count=self.target * self.dim).reshape(self.target, self.dim)
                try:
                    ref = build(rows)
                except DriftReferenceError:
                    # e.g. every prediction the same image: start collecting afresh.
                    self.samples_path.unlink(missing_ok=True)
                    raise
                ref.save(self.reference_path)  # a temporary file, then a rename
                self.samples_path.unlink(missing_ok=True)
            return count
