"""Labelled photos out of the feedback store, for retraining: an ImageFolder layout
(one folder per class, ``/`` in a class name written as ``_`` so the folders sort in
the classes' index order) and ``manifest.csv`` naming each file's sha256, label,
who gave the label, and the prediction it came from. The operator's label wins over
the person's answer; photos are copied, never moved."""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path

from app_web.feedback_store import FeedbackStore
from app_web.photo_store import PhotoStore

MANIFEST_FIELDS = ("file", "sha256", "label", "label_source", "predicted", "confidence",
                   "variant", "model_version", "queue", "prediction_id")


@dataclass(frozen=True)
class ExportSummary:
    photos: int
    per_class: dict[str, int]
    manifest: Path


def class_folder(label: str) -> str:
    return label.replace("/", "_")


def export(store: FeedbackStore, photos: PhotoStore, out: Path,
           operator_only: bool = False) -> ExportSummary:
    out.mkdir(parents=True, exist_ok=True)
    per_class: dict[str, int] = {}
    rows = []
    for r in store.labelled():
        if r.label is not None:
            label, source = r.label, "operator"
        elif not operator_only and r.user_label is not None:
            label, source = r.user_label, "user"
        else:
            continue
        rel = Path(class_folder(label)) / f"{r.photo_sha256}.{r.photo_ext}"
        target = out / rel
        if not target.exists():
            target.parent.mkdir(exist_ok=True)
            shutil.copyfile(photos.path(r.photo_sha256, r.photo_ext), target)
        per_class[label] = per_class.get(label, 0) + 1
        rows.append({"file": rel.as_posix(), "sha256": r.photo_sha256, "label": label,
                     "label_source": source, "predicted": r.predicted,
                     "confidence": f"{r.confidence:.6f}", "variant": r.variant,
                     "model_version": r.model_version, "queue": r.queue, "prediction_id": r.id})
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, MANIFEST_FIELDS)
        w.writeheader()
        w.writerows(rows)
    return ExportSummary(len(rows), per_class, manifest)
