"""``gourmetgram export-onnx``: the ONNX Runtime form of a model file, made once per
file (by ``canary ship`` and the deploy, before the API restarts) and written only
if it agrees with torch on the same images.

The graph takes the batcher's uint8 images (N, crop, crop, 3) and does the
normalisation, the network and the softmax, and outputs the penultimate features of
the same pass, which drift detection reads (app_api/model.py ``FeatureClassifier``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from app_api.inference import (
    FORMAT_VERSION,
    INPUT_NAME,
    META_CHECK,
    META_FORMAT,
    META_INFO,
    META_SHA256,
    OUTPUT_NAMES,
    load_onnx,
    onnx_path_for,
)
from app_api.model import LoadedModel, load_model
from app_api.model_info import ModelLoadError

# The agreement the export must reach on every check image, against torch fp32 on CPU
# (the torch serving path): the same top-1 class, each probability within
# PROB_TOLERANCE, each feature within FEATURE_TOLERANCE x the largest feature.
PROB_TOLERANCE = 1e-4
FEATURE_TOLERANCE = 1e-4
CHECK_IMAGES = 24
OPSET = 17


class _ServingGraph(nn.Module):
    """uint8 NHWC images -> (probabilities, features): everything the API runs per batch."""

    def __init__(self, model: LoadedModel):
        super().__init__()
        self.net = model.module
        pp = model.info.preprocessing
        std = torch.tensor(pp.std, dtype=torch.float32)
        mean = torch.tensor(pp.mean, dtype=torch.float32)
        self.register_buffer("scale", (1.0 / (255.0 * std)).view(1, 3, 1, 1))
        self.register_buffer("bias", (-mean / std).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor):
        x = images.permute(0, 3, 1, 2).float() * self.scale + self.bias
        logits, feats = self.net(x)
        probs = torch.softmax(logits, dim=1)
        return probs if feats is None else (probs, feats)


def check_images(crop: int, n: int = CHECK_IMAGES, seed: int = 0) -> np.ndarray:
    """Deterministic uint8 images (n, crop, crop, 3) that reach many classes: smooth
    colour gradients, blocks and noise of varied brightness."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:crop, 0:crop].astype(np.float32) / crop
    out = np.empty((n, crop, crop, 3), dtype=np.uint8)
    for i in range(n):
        kind = i % 3
        if kind == 0:
            a = rng.uniform(-1, 1, size=(3, 3))
            img = np.stack([a[c, 0] * xx + a[c, 1] * yy + a[c, 2] for c in range(3)], -1)
        elif kind == 1:
            cells = rng.uniform(0, 1, size=(8, 8, 3))
            img = np.kron(cells, np.ones((crop // 8 + 1, crop // 8 + 1, 1)))[:crop, :crop]
        else:
            img = rng.uniform(0, 1, size=(crop, crop, 3)) * rng.uniform(0.2, 1)
        img = (img - img.min()) / max(float(np.ptp(img)), 1e-6)
        out[i] = (img * 255).astype(np.uint8)
    return out


def agreement(torch_model: LoadedModel, onnx_model, images: np.ndarray) -> dict:
    """Compares both on ``images``, in batches of 8 and the first image alone."""
    worst = {"images": int(len(images)), "top1_mismatches": [], "max_prob_diff": 0.0,
             "max_feature_diff": 0.0, "prob_tolerance": PROB_TOLERANCE,
             "feature_tolerance": FEATURE_TOLERANCE}
    batches = [(0, images[:1])] + [(i, images[i:i + 8]) for i in range(0, len(images), 8)]
    for start, batch in batches:
        tp, tf = torch_model.infer(batch)
        op, of = onnx_model.infer(batch)
        worst["max_prob_diff"] = max(worst["max_prob_diff"], float(np.abs(tp - op).max()))
        if tf is not None:
            scale = max(float(np.abs(tf).max()), 1e-6)
            worst["max_feature_diff"] = max(worst["max_feature_diff"],
                                            float(np.abs(tf - of).max()) / scale)
        for j, (t, o) in enumerate(zip(tp.argmax(1), op.argmax(1), strict=True)):
            if t != o and start + j not in worst["top1_mismatches"]:
                worst["top1_mismatches"].append(start + j)
    return worst


def _refusal(check: dict) -> str | None:
    if check["top1_mismatches"]:
        return (f"top-1 class differs from torch on {len(check['top1_mismatches'])} of "
                f"{check['images']} check images")
    if check["max_prob_diff"] > PROB_TOLERANCE:
        return (f"a probability differs from torch by {check['max_prob_diff']:.2e} "
                f"(tolerance {PROB_TOLERANCE:.0e})")
    if check["max_feature_diff"] > FEATURE_TOLERANCE:
        return (f"the drift features differ from torch by {check['max_feature_diff']:.2e} "
                f"of their scale (tolerance {FEATURE_TOLERANCE:.0e})")
    return None


def _graph_bytes(model: LoadedModel) -> bytes:
    import io

    graph = _ServingGraph(model).eval()
    crop = model.info.preprocessing.crop
    example = torch.zeros((2, crop, crop, 3), dtype=torch.uint8)
    outputs = list(OUTPUT_NAMES if model.info.feature_dim is not None else OUTPUT_NAMES[:1])
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode():
        # The TorchScript-based exporter: the torch.export one needs onnxscript and
        # gives the same graph for these networks.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph, (example,), buf, input_names=[INPUT_NAME], output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in [INPUT_NAME, *outputs]},
            opset_version=OPSET, dynamo=False,
        )
    return buf.getvalue()


def _with_metadata(graph: bytes, meta: dict[str, str]) -> bytes:
    import onnx

    proto = onnx.load_from_string(graph)
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


def _write_like(path: Path, data: bytes, like: Path) -> None:
    """Atomically, with the model file's mode and group (the service user reads both)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        st = like.stat()
        os.chmod(tmp, st.st_mode & 0o777)
        if os.geteuid() == 0:
            shutil.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_onnx(model_path: Path, *, allow_pickle: bool = False) -> tuple[Path, dict]:
    """Writes ``<model>.onnx`` beside the model if it agrees with torch; returns its path
    and the agreement figures. ModelLoadError (nothing written) otherwise."""
    model_path = Path(model_path)
    out = onnx_path_for(model_path)
    model = load_model(model_path, allow_pickle=allow_pickle, device="cpu")
    try:
        graph = _graph_bytes(model)
    except Exception as e:  # noqa: BLE001 - the exporter raises many kinds
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(
            f"{model_path}: this network cannot be exported to ONNX ({first}); "
            "the API serves it with torch (FOOD11_RUNTIME=auto)"
        ) from None
    info = asdict(model.info)
    info.pop("path")
    meta = {META_FORMAT: FORMAT_VERSION, META_SHA256: model.info.sha256,
            META_INFO: json.dumps(info)}
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.check.")
    os.close(fd)
    check_path = Path(tmp)
    try:
        check_path.write_bytes(_with_metadata(graph, meta))
        # load_onnx looks beside the model: a temporary name in the same folder.
        check_model = load_onnx(model_path, digest=model.info.sha256,
                                onnx_file=check_path)
        check = agreement(model, check_model, check_images(model.info.preprocessing.crop))
    finally:
        check_path.unlink(missing_ok=True)
    why = _refusal(check)
    if why:
        raise ModelLoadError(f"{model_path}: the ONNX export was not written: {why}")
    _write_like(out, _with_metadata(graph, {**meta, META_CHECK: json.dumps(check)}), model_path)
    return out, check
