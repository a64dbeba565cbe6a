"""``build-drift-reference``: reference features and calibrated thresholds for the
API's online drift detector (app_api/drift.py), from a folder of the user's images."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from gourmetgram.errors import UsageError


def _positive_int(name: str, value, lo: int, hi: int) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be a whole number, got {value!r}") from None
    if not lo <= v <= hi:
        raise UsageError(f"{name} must be between {lo} and {hi}, got {v}")
    return v


def _ert(value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"--ert must be a number of samples, got {value!r}") from None
    if not 2 <= v <= 1e7:
        raise UsageError(f"--ert must be between 2 and 10000000 samples, got {value}")
    return v


def _model_path(arg: str | None) -> Path:
    from app_api.settings import DEFAULT_DEMO_MODEL, ApiSettings

    if arg:
        p = Path(arg)
        if not p.is_file():
            raise UsageError(f"--model {p} does not exist")
        return p
    try:
        configured = ApiSettings().model
    except Exception:  # noqa: BLE001 - a bad environment is reported by serve-api
        configured = None
    if configured is not None:
        if not configured.is_file():
            raise UsageError(f"FOOD11_MODEL {configured} does not exist")
        return configured
    if not DEFAULT_DEMO_MODEL.exists():
        from app_api.demo_model import build_demo_model

        print(f"building the demo model at {DEFAULT_DEMO_MODEL}", file=sys.stderr)
        build_demo_model(DEFAULT_DEMO_MODEL)
    return DEFAULT_DEMO_MODEL


def cmd_build_drift_reference(args: argparse.Namespace) -> int:
    from app_api import drift, drift_reference

    images = Path(args.images)
    if not images.is_dir():
        raise UsageError(f"--images {images} is not a folder")
    if (args.out is None) == (args.state_dir is None):
        raise UsageError("give one of --out FILE or --state-dir FOLDER")
    if args.out is not None:
        out = Path(args.out)
        if out.is_dir():
            raise UsageError(f"--out {out} is a folder; give a file name such as drift-reference.npz")
        if not out.parent.exists():
            raise UsageError(f"--out: folder {out.parent} does not exist")
    ert = _ert(args.ert)
    window = _positive_int("--window", args.window, 2, 1000)
    seed = _positive_int("--seed", args.seed, 0, 2**32 - 1)
    dim = _positive_int("--dim", args.dim, 1, 100000)
    streams = _positive_int("--streams", args.streams, 1000, 10_000_000)
    if streams * (1.0 / ert) < 20:
        raise UsageError(
            f"--streams {streams} is too few for --ert {ert:g}: each threshold needs about "
            f"20 simulated alarms, so at least {int(20 * ert)} streams"
        )
    paths = drift_reference.find_images(images)
    if not paths:
        raise UsageError(
            f"--images {images} holds no images (looked for "
            f"{', '.join(sorted(drift_reference.IMAGE_SUFFIXES))})"
        )
    need = max(drift.MIN_REFERENCE, 2 * (4 * window - 1))
    if len(paths) < need:
        raise UsageError(
            f"--images {images} holds {len(paths)} images; a window of {window} needs at least "
            f"{need} (a few hundred to a few thousand give a sharper detector)"
        )

    from app_api.hashing import sha256_of
    from app_api.model import ModelLoadError, load_model

    model_path = _model_path(args.model)
    if args.state_dir is not None:
        sha = sha256_of(model_path)
        out = drift_reference.stored_reference_path(Path(args.state_dir), sha)
        if out.exists() and args.keep_existing:
            print(f"kept {out}: a reference for model sha256 {sha[:12]} is there")
            return 0
        out.parent.mkdir(parents=True, exist_ok=True)
    try:
        model = load_model(model_path, allow_pickle=args.allow_pickle, device=args.device)
    except ModelLoadError as e:
        raise UsageError(str(e)) from None
    if model.info.feature_dim is None:
        raise UsageError(f"model {model_path} gives no penultimate features; drift needs them")
    started = time.perf_counter()
    feats, skipped = drift_reference.features_of_images(model, paths)
    for p, why in skipped[:5]:
        print(f"skipped {p}: {why}", file=sys.stderr)
    if len(skipped) > 5:
        print(f"... and {len(skipped) - 5} more unreadable files skipped", file=sys.stderr)
    if len(feats) < need:
        raise UsageError(f"only {len(feats)} readable images in {images}; need at least {need}")
    try:
        ref = drift.build_reference(
            feats,
            model_sha256=model.info.sha256,
            model_version=model.info.version,
            ert=ert,
            window=window,
            projection=args.projection,
            dim=dim,
            seed=seed,
            n_streams=streams,
            extra_meta={"source": "images", "images": len(feats), "skipped": len(skipped),
                        "model_path": str(model_path)},
        )
    except drift.DriftReferenceError as e:
        raise UsageError(str(e)) from None
    ref.save(out)
    print(
        f"wrote {out}: {len(ref.ref_idx)} reference + {len(ref.cal_idx)} calibration samples "
        f"({ref.features.shape[1]}-d, {ref.meta['projection']} to {ref.proj_matrix.shape[1]}-d), "
        f"window {window}, ERT {ert:g}, threshold {ref.stationary_threshold:.4g}, "
        f"model sha256 {model.info.sha256[:12]} ({time.perf_counter() - started:.0f}s)"
    )
    return 0


def register(sub) -> None:
    from app_api import drift

    b = sub.add_parser(
        "build-drift-reference",
        help="reference features and calibrated thresholds for drift detection",
        description="Runs the model on a folder of images (any depth; JPEG, PNG, WebP, ...), "
        "keeps their penultimate features and calibrates the online drift detector so the "
        "expected run time between false alarms is --ert samples. See docs/drift.md.",
    )
    b.add_argument("--images", required=True, help="folder of in-distribution images")
    b.add_argument("--out", help="output file, e.g. drift-reference.npz (FOOD11_DRIFT_REFERENCE)")
    b.add_argument("--state-dir", help="or: an API instance's FOOD11_STATE_DIR; the reference "
                   "is stored there under the model's sha256 and the instance arms with it")
    b.add_argument("--keep-existing", action="store_true",
                   help="with --state-dir: do nothing if a reference for this model is there")
    b.add_argument("--model", help="model file (default: FOOD11_MODEL, else the demo model)")
    b.add_argument("--allow-pickle", action="store_true", help="as for serve-api")
    b.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    b.add_argument("--ert", default=drift.DEFAULT_ERT,
                   help=f"expected samples between false alarms (default {drift.DEFAULT_ERT})")
    b.add_argument("--window", default=drift.DEFAULT_WINDOW,
                   help=f"test window, samples (default {drift.DEFAULT_WINDOW})")
    b.add_argument("--seed", default=0, help="random seed of split, projection, calibration")
    b.add_argument("--projection", choices=drift.PROJECTIONS, default=drift.DEFAULT_PROJECTION,
                   help=f"feature reduction (default {drift.DEFAULT_PROJECTION})")
    b.add_argument("--dim", default=drift.DEFAULT_DIM,
                   help=f"reduced dimension (default {drift.DEFAULT_DIM})")
    b.add_argument("--streams", default=drift.DEFAULT_STREAMS,
                   help=f"simulated calibration streams (default {drift.DEFAULT_STREAMS})")
    b.set_defaults(func=cmd_build_drift_reference)
