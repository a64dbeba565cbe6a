"""Which runtime serves a model file, and the ONNX Runtime one.

On CPU, ONNX Runtime runs the lab's MobileNetV2 two to three times faster than torch
eager on one thread, and a process that never imports torch holds a fraction of the
memory (docs/api.md). The ONNX file is made once per model file by ``gourmetgram
export-onnx`` (app_api/onnx_export.py), which checks it against torch and records the
model file's sha256 in it; a serving process uses it only for that exact file.
torch stays for CUDA (fp16 + CUDA graphs) and for a model without a matching export.

This module imports neither torch nor onnxruntime at import time: the torch path
imports torch, the ONNX path onnxruntime, each only when chosen.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app_api.hashing import sha256_of
from app_api.model_info import ModelInfo, ModelLoadError, Preprocessing

log = logging.getLogger(__name__)

# The ONNX file's metadata (custom_metadata_map), written by onnx_export.
META_FORMAT = "gourmetgram_onnx"
FORMAT_VERSION = "1"
META_SHA256 = "source_sha256"
META_INFO = "model_info"
META_CHECK = "agreement_check"
# The graph's input: uint8 images (N, crop, crop, 3), as the batcher stacks them;
# normalisation and softmax are inside the graph.
INPUT_NAME = "images"
OUTPUT_NAMES = ("probabilities", "features")


# Requests per forward pass unless FOOD11_MAX_BATCH says: on ONNX Runtime on the CPU a
# batch costs more per image than single images and holds an activation arena per size;
# on torch it costs less per image (bench/bench_api.py, docs/api.md).
DEFAULT_MAX_BATCH = {"onnx": 1, "torch": 8}


def onnx_path_for(model: Path) -> Path:
    """Where the export of a model file lives: beside it, ``<file>.onnx``."""
    model = Path(model)
    return model.with_name(model.name + ".onnx")


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


@dataclass(frozen=True)
class OnnxExport:
    """What an export says about itself."""

    source_sha256: str
    info: dict
    check: dict


def open_export(onnx_path: Path, threads: int = 1):
    """(session, OnnxExport) of a file written by export-onnx; ModelLoadError otherwise."""
    import onnxruntime as ort

    if not onnx_path.is_file():
        raise ModelLoadError(f"ONNX file {onnx_path} does not exist")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Intra-op threads sleep between forward passes instead of spinning: a spinning pool
    # takes the core that another request's forward pass or decode needs.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own kinds for bad files
        raise ModelLoadError(
            f"{onnx_path}: not a readable ONNX file ({_first_line(e)}); "
            "run gourmetgram export-onnx again"
        ) from None
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get(META_FORMAT) != FORMAT_VERSION:
        raise ModelLoadError(
            f"{onnx_path}: not written by gourmetgram export-onnx (no {META_FORMAT} "
            f"metadata {FORMAT_VERSION!r}); run gourmetgram export-onnx again"
        )
    try:
        export = OnnxExport(meta[META_SHA256], json.loads(meta[META_INFO]),
                            json.loads(meta.get(META_CHECK, "{}")))
    except (KeyError, ValueError) as e:
        raise ModelLoadError(f"{onnx_path}: damaged export metadata ({e})") from None
    inputs = [i.name for i in session.get_inputs()]
    if inputs != [INPUT_NAME]:
        raise ModelLoadError(f"{onnx_path}: the graph takes {inputs}, expected [{INPUT_NAME!r}]")
    return session, export


class IdleCore:
    """Whether the host's cores are not all taken right now: no more runnable threads,
    the caller included, than cores this process may run on. Not "fewer": the caller's
    own event loop is often still finishing the hand-off that woke it. The kernel's
    instantaneous count in /proc/loadavg (its fourth field, ``running/total``) sees the
    other workers and instances too, which a count inside one process does not. Where it
    cannot be read, every core counts as free."""

    def __init__(self, path: str = "/proc/loadavg"):
        self.cores = len(os.sched_getaffinity(0))
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._fd = None

    def __call__(self) -> bool:
        if self._fd is None:
            return True
        try:
            return runnable_threads(os.pread(self._fd, 128, 0)) <= self.cores
        except (OSError, ValueError, IndexError):
            return True


def runnable_threads(loadavg: bytes) -> int:
    """The runnable threads in /proc/loadavg's text (``0.50 0.40 0.30 3/512 1234``)."""
    return int(loadavg.split()[3].split(b"/")[0])


class OnnxModel:
    """A model served by ONNX Runtime on CPU; the same interface as model.LoadedModel.
    ``InferenceSession.run`` is thread-safe and releases the GIL, so several inference
    threads can share one session.

    With a ``solo`` session (the same graph on more intra-op threads), a forward pass
    that starts while no other runs in this process and a core of the host is idle
    takes it: a lone request then uses the idle cores (lower latency at low load), while
    concurrent ones keep one thread each, which gives more throughput when every core is
    busy (docs/api.md)."""

    def __init__(self, session, info: ModelInfo, solo=None):
        self.session = session
        self.solo = solo
        self.info = info
        self._outputs = [o.name for o in session.get_outputs()]
        self._lock = threading.Lock()
        self._running = 0
        self.solo_runs = 0  # forward passes that ran on the solo session
        self.idle_core = IdleCore() if solo is not None else None

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.class_names

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``images``: uint8 (N, H, W, 3). Returns probabilities (N, C) and the
        penultimate features (N, D) of the same run (or None)."""
        feed = {INPUT_NAME: np.ascontiguousarray(images)}
        if self.solo is None:
            out = self.session.run(self._outputs, feed)
        else:
            with self._lock:
                self._running += 1
                alone = self._running == 1 and self.idle_core()
                self.solo_runs += alone
            try:
                out = (self.solo if alone else self.session).run(self._outputs, feed)
            finally:
                with self._lock:
                    self._running -= 1
        return out[0], out[1] if len(out) > 1 else None

    def warm_up(self, max_batch: int) -> None:
        c = self.info.preprocessing.crop
        for session in (self.session, self.solo):
            for n in sorted({1, 2, max_batch}) if session is not None else ():
                session.run(self._outputs, {INPUT_NAME: np.zeros((n, c, c, 3), dtype=np.uint8)})


def load_onnx(model_path: Path, *, threads: int = 1, solo_threads: int = 0,
              version: str | None = None, digest: str | None = None,
              onnx_file: Path | None = None) -> OnnxModel:
    """The export beside ``model_path`` (or ``onnx_file``), refused unless it was made
    from exactly that model file. ``solo_threads`` above ``threads`` adds the solo
    session (OnnxModel) on that many intra-op threads."""
    model_path = Path(model_path)
    onnx_path = onnx_file or onnx_path_for(model_path)
    if not onnx_path.is_file():
        raise ModelLoadError(
            f"no ONNX export of {model_path} (expected {onnx_path}); make it with "
            f"gourmetgram export-onnx --model {model_path}"
        )
    digest = digest or sha256_of(model_path)
    session, export = open_export(onnx_path, threads)
    if export.source_sha256 != digest:
        raise ModelLoadError(
            f"{onnx_path} was exported from another model file (sha256 "
            f"{export.source_sha256[:12]}, {model_path.name} has {digest[:12]}); run "
            f"gourmetgram export-onnx --model {model_path} again"
        )
    meta = export.info
    try:
        info = ModelInfo(
            version=version or meta["version"],
            sha256=digest,
            form=meta["form"],
            arch=meta["arch"],
            path=str(model_path),
            class_names=tuple(meta["class_names"]),
            preprocessing=Preprocessing.from_dict(meta["preprocessing"]),
            feature_dim=meta.get("feature_dim"),
            device="cpu",
            runtime="onnx",
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ModelLoadError(f"{onnx_path}: damaged export metadata ({e})") from None
    solo = open_export(onnx_path, solo_threads)[0] if solo_threads > threads else None
    model = OnnxModel(session, info, solo)
    c = info.preprocessing.crop
    try:
        probs, _ = model.infer(np.zeros((1, c, c, 3), dtype=np.uint8))
    except Exception as e:  # noqa: BLE001 - a graph that does not run is a bad file
        raise ModelLoadError(f"{onnx_path}: the graph fails on a {c}x{c} image ({_first_line(e)})") \
            from None
    if probs.shape != (1, len(info.class_names)):
        raise ModelLoadError(
            f"{onnx_path}: the graph outputs shape {probs.shape}, expected "
            f"(1, {len(info.class_names)})"
        )
    return model


def resolve_device(device: str) -> str:
    """``auto`` becomes cuda or cpu; asks torch (imported here), so a caller that must
    stay torch-free resolves the device before (``serve-api`` does, for its workers)."""
    if device != "auto":
        return device
    from app_api.model import pick_device

    return str(pick_device(device))


def load_for_serving(model_path: Path, *, runtime: str, device: str, threads: int,
                     solo_threads: int = 0, allow_pickle: bool = False,
                     version: str | None = None):
    """The model a worker serves: an OnnxModel or a model.LoadedModel (not warmed up).

    ``runtime``: ``auto`` is ONNX Runtime on CPU when the export matches the model file,
    torch on CUDA or without an export (a stale or damaged one is logged as a warning,
    a missing one is the plain torch setup); ``onnx`` refuses
    to start without a matching export; ``torch`` is torch."""
    if runtime != "torch":
        device = resolve_device(device)
    if runtime == "onnx" and device != "cpu":
        raise ModelLoadError(
            f"FOOD11_RUNTIME=onnx runs on CPU only, but the device is {device}: "
            "set FOOD11_RUNTIME=auto or torch (or FOOD11_DEVICE=cpu)"
        )
    if runtime == "onnx":
        return load_onnx(model_path, threads=threads, solo_threads=solo_threads, version=version)
    if runtime == "auto" and device == "cpu" and not onnx_path_for(model_path).exists():
        log.info("FOOD11_RUNTIME=auto: no ONNX export of %s, serving with torch", model_path)
    elif runtime == "auto" and device == "cpu":
        try:
            return load_onnx(model_path, threads=threads, solo_threads=solo_threads,
                             version=version)
        except ModelLoadError as e:
            log.warning("FOOD11_RUNTIME=auto: serving with torch, as %s", e)
    import torch

    from app_api.model import load_model

    torch.set_num_threads(threads)
    return load_model(model_path, allow_pickle=allow_pickle, device=device, version=version)


def load_from_settings(model_path: Path, settings):
    """What ``settings`` (an ApiSettings) serve from ``model_path``: one call for
    serve-api's check before gunicorn starts and for each worker, so both decide alike."""
    return load_for_serving(
        model_path,
        runtime=settings.runtime,
        device=settings.device,
        threads=settings.torch_threads,
        solo_threads=settings.solo_threads,
        allow_pickle=settings.allow_pickle,
        version=settings.model_version,
    )
