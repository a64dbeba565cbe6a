"""``serve-api`` and ``build-demo-model``."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from gourmetgram.commands.options import settings_from_options
from gourmetgram.errors import UsageError

# Opt-in (GOURMETGRAM_MALLOC_TUNING=1): glibc keeps freed activation buffers instead of
# handing them back to the kernel. Measured by bench/bench_api.py (docs/api.md): no
# throughput gain with batched requests, about 160 MiB more per worker, so off.
MALLOC_TUNING = {
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": "100000000000",
    "MALLOC_TOP_PAD_": "536870912",
}
OPTION_ENV = (
    ("host", "FOOD11_HOST"),
    ("port", "FOOD11_PORT"),
    ("variant", "FOOD11_VARIANT"),
    ("model", "FOOD11_MODEL"),
    ("model_version", "FOOD11_MODEL_VERSION"),
    ("workers", "FOOD11_WORKERS"),
    ("device", "FOOD11_DEVICE"),
    ("runtime", "FOOD11_RUNTIME"),
    ("inference_threads", "FOOD11_INFERENCE_THREADS"),
    ("max_batch", "FOOD11_MAX_BATCH"),
    ("metrics_dir", "FOOD11_METRICS_DIR"),
    ("drift_reference", "FOOD11_DRIFT_REFERENCE"),
    ("drift_bootstrap_samples", "FOOD11_DRIFT_BOOTSTRAP_SAMPLES"),
    ("state_dir", "FOOD11_STATE_DIR"),
    ("shadow_dir", "FOOD11_SHADOW_DIR"),
)


def settings_from_args(args: argparse.Namespace):
    """Options override the environment; the result is validated as one object."""
    from app_api.settings import ApiSettings

    if getattr(args, "allow_pickle", False):
        os.environ["FOOD11_ALLOW_PICKLE"] = "1"
    settings = settings_from_options(args, OPTION_ENV, ApiSettings)
    if settings.model is not None and not settings.model.is_file():
        raise UsageError(f"model file {settings.model} does not exist")
    if settings.drift_reference is not None and not settings.drift_reference.is_file():
        raise UsageError(f"drift reference {settings.drift_reference} does not exist")
    return settings


def check_model(settings):
    """Loads the model once before gunicorn starts, so a wrong file is one clear line and
    a non-zero exit, not a traceback per worker (exec frees this process's copy).
    Returns its ModelInfo: the runtime and device chosen here are the workers' too."""
    from app_api.inference import load_from_settings
    from app_api.model_info import ModelLoadError
    from app_api.settings import DEFAULT_DEMO_MODEL

    try:
        model = load_from_settings(settings.model or DEFAULT_DEMO_MODEL, settings)
    except ModelLoadError as e:
        raise UsageError(f"cannot serve this model: {e}") from None
    return model.info


def _check_drift_reference(path: Path, model: Path) -> None:
    """Fails before gunicorn starts; each worker checks again when it loads the model."""
    from app_api.drift import DriftReference, DriftReferenceError
    from app_api.hashing import sha256_of

    try:
        ref = DriftReference.load(path)
        # The feature dimension is checked by the workers, once the model is loaded.
        ref.check_model(sha256_of(model), ref.features.shape[1], str(path))
    except DriftReferenceError as e:
        raise UsageError(str(e)) from None


def cmd_serve_api(args: argparse.Namespace) -> int:
    from app_api.settings import DEFAULT_DEMO_MODEL

    settings = settings_from_args(args)
    if settings.model is None and not DEFAULT_DEMO_MODEL.exists():
        from app_api.demo_model import build_demo_model

        print(f"building the demo model at {DEFAULT_DEMO_MODEL}", file=sys.stderr)
        build_demo_model(DEFAULT_DEMO_MODEL)
    info = check_model(settings)
    # The workers do not decide again: on ONNX Runtime they never import torch.
    os.environ["FOOD11_RUNTIME"] = info.runtime
    os.environ["FOOD11_DEVICE"] = info.device.split(":")[0]
    print(f"serving {info.version} with {info.runtime} on {info.device}", file=sys.stderr)
    if settings.drift_reference is not None:
        _check_drift_reference(settings.drift_reference, settings.model or DEFAULT_DEMO_MODEL)
    metrics_dir = settings.metrics_dir or Path(
        os.environ.get("RUNTIME_DIRECTORY")
        or Path(tempfile.gettempdir()) / f"gourmetgram-metrics-{settings.variant}-{settings.port}"
    )
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    os.environ.setdefault("OMP_NUM_THREADS", str(settings.torch_threads))
    if os.environ.get("GOURMETGRAM_MALLOC_TUNING", "0") == "1":
        for k, v in MALLOC_TUNING.items():
            os.environ.setdefault(k, v)
    argv = [
        sys.executable, "-m", "gunicorn",
        "-c", "python:app_api.gunicorn_conf",
        "app_api.main:create_app()",
    ]
    os.execv(sys.executable, argv)
    return 0  # not reached


def cmd_build_demo_model(args: argparse.Namespace) -> int:
    from app_api.demo_model import build_demo_model
    from app_api.model import load_model

    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory; give a file name such as demo-model.pt")
    if not out.parent.exists():
        raise UsageError(f"--out: folder {out.parent} does not exist")
    build_demo_model(out)
    model = load_model(out, device="cpu")
    print(f"wrote {out} (version {model.info.version}, sha256 {model.info.sha256})")
    return 0


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from app_api.model_info import ModelLoadError
    from app_api.onnx_export import export_onnx

    model = Path(args.model)
    if model.is_dir():
        raise UsageError(f"--model {model} is a directory; give the model file")
    if not model.is_file():
        raise UsageError(f"model file {model} does not exist")
    if not os.access(model.parent, os.W_OK):
        raise UsageError(f"cannot write the export beside {model}: folder {model.parent} "
                         "is not writable")
    try:
        out, check = export_onnx(model, allow_pickle=args.allow_pickle)
    except ModelLoadError as e:
        raise UsageError(str(e)) from None
    print(f"wrote {out}: agrees with torch on {check['images']} images (top-1 identical, "
          f"max probability difference {check['max_prob_diff']:.1e}, max feature difference "
          f"{check['max_feature_diff']:.1e} of scale)")
    return 0


def register(sub) -> None:
    s = sub.add_parser(
        "serve-api",
        help="run the model API (gunicorn + uvicorn workers)",
        description="Options override the FOOD11_* environment settings (see docs/api.md).",
    )
    s.add_argument("--host", help="bind address (FOOD11_HOST, default 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (FOOD11_PORT, default 8000)")
    s.add_argument("--variant", help="production, canary, ... (FOOD11_VARIANT)")
    s.add_argument("--model", help="model file (FOOD11_MODEL; default: the demo model)")
    s.add_argument("--model-version", help="version label (FOOD11_MODEL_VERSION)")
    s.add_argument("--workers", type=int, help="gunicorn workers (FOOD11_WORKERS, default 2)")
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], help="FOOD11_DEVICE")
    s.add_argument("--runtime", choices=["auto", "torch", "onnx"],
                   help="FOOD11_RUNTIME (default auto: ONNX Runtime on CPU when the model has "
                   "a matching export-onnx file)")
    s.add_argument("--inference-threads", type=int,
                   help="threads running batches per worker (FOOD11_INFERENCE_THREADS, default 1)")
    s.add_argument("--max-batch", type=int, help="FOOD11_MAX_BATCH (default: 1 on ONNX Runtime, 8 on torch)")
    s.add_argument("--metrics-dir", help="FOOD11_METRICS_DIR (multiprocess metrics)")
    s.add_argument(
        "--drift-reference",
        help="turn drift detection on with this reference, made by build-drift-reference "
        "(FOOD11_DRIFT_REFERENCE; see docs/drift.md)",
    )
    s.add_argument(
        "--drift-bootstrap-samples", type=int,
        help="without a reference, the first N predictions become one; 0: drift off "
        "(FOOD11_DRIFT_BOOTSTRAP_SAMPLES, default 200)",
    )
    s.add_argument("--state-dir", help="where the bootstrapped reference is kept (FOOD11_STATE_DIR)")
    s.add_argument("--shadow-dir", help="log answers to requests with X-Shadow-Id here, for the "
                   "canary's shadow stage (FOOD11_SHADOW_DIR; docs/analysis.md)")
    s.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow a whole pickled module (runs code from the file; FOOD11_ALLOW_PICKLE=1)",
    )
    s.set_defaults(func=cmd_serve_api)

    e = sub.add_parser(
        "export-onnx",
        help="write <model>.onnx for ONNX Runtime, checked against torch",
        description="Exports the model file to ONNX beside it (<model>.onnx) and writes it "
        "only if it agrees with torch on the check images; the API then serves it on CPU "
        "without torch (FOOD11_RUNTIME=auto). canary ship and the deploy run it.",
    )
    e.add_argument("--model", required=True, help="the model file")
    e.add_argument("--allow-pickle", action="store_true",
                   help="allow a whole pickled module (runs code from the file)")
    e.set_defaults(func=cmd_export_onnx)

    b = sub.add_parser("build-demo-model", help="build the EfficientNet-Lite0 demo model")
    b.add_argument("--out", required=True, help="output file, e.g. demo-model.pt")
    b.set_defaults(func=cmd_build_demo_model)
