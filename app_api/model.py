"""Loading the Food-11 classifier in every form it was published in, and running it.

Forms, detected from the file itself:
- ``gourmetgram`` archive: our own ``torch.save`` dict (architecture name, state_dict,
  metadata), loaded with ``weights_only=True``; the demo model uses it.
- the lab's ``state_dict`` for torchvision MobileNetV2 with an 11-class head.
- a TorchScript archive.
- a whole pickled ``nn.Module``: unpickling runs code from the file, so only with
  an explicit opt-in (``FOOD11_ALLOW_PICKLE=1`` / ``--allow-pickle``).

Every loaded model answers one forward pass with both the logits and the
penultimate-layer features (the classifier head's input), so drift detection
reuses the prediction's own features instead of a second pass.
"""

from __future__ import annotations

import io
import logging
import pickle
import pickletools
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from app_api.classes import FOOD11_CLASSES
from app_api.hashing import sha256_of
from app_api.model_info import ModelInfo, ModelLoadError, Preprocessing

log = logging.getLogger(__name__)

ARCHIVE_KEY = "gourmetgram_model"
ARCHIVE_FORMAT = 1


class FeatureClassifier(nn.Module):
    """Wraps a network so one forward pass yields ``(logits, features)``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        if hasattr(net, "features") and hasattr(net, "classifier"):
            self.mode = "features+classifier"
        elif hasattr(net, "body") and hasattr(net, "head"):
            self.mode = "body+head"
        else:
            self.mode = "logits-only"

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.mode == "features+classifier":
            f = self.net.features(x)
            f = torch.flatten(nn.functional.adaptive_avg_pool2d(f, 1), 1)
            return self.net.classifier(f), f
        if self.mode == "body+head":
            f = self.net.body(x)
            return self.net.head(f), f
        return self.net(x), None


def build_mobilenet_v2(num_classes: int = len(FOOD11_CLASSES)) -> nn.Module:
    """The lab's architecture: torchvision MobileNetV2, head Dropout(0.5) + Linear(1280, 11)."""
    from torchvision.models import mobilenet_v2

    net = mobilenet_v2(weights=None)
    net.classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(1280, num_classes))
    return net


def _architectures():
    from app_api import demo_model

    return {
        "mobilenet_v2_food11": lambda meta: build_mobilenet_v2(len(meta["class_names"])),
        demo_model.ARCH: demo_model.build_architecture,
    }


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except zipfile.BadZipFile:
        return False
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def _state_dict_of(obj) -> Mapping | None:
    """The tensor mapping in a plain state_dict or a common checkpoint wrapper."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(
                isinstance(v, torch.Tensor) for v in inner.values()
            ):
                return inner
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    return None


def _load_state_dict_strict(net: nn.Module, sd: Mapping, what: str) -> None:
    own = net.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        raise ModelLoadError(
            f"{what}: the weights do not fit this architecture "
            f"({len(missing)} missing keys, e.g. {missing[:3]}; "
            f"{len(unexpected)} unexpected keys, e.g. {unexpected[:3]})"
        )
    for k, v in sd.items():
        if tuple(own[k].shape) != tuple(v.shape):
            raise ModelLoadError(
                f"{what}: tensor {k} has shape {tuple(v.shape)}, the architecture expects "
                f"{tuple(own[k].shape)} (wrong class count or wrong architecture?)"
            )
    net.load_state_dict(sd)


def _first_line(e: BaseException) -> str:
    """The informative part of torch's long errors: its own reason, first sentence."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0].split(". ")[0].rstrip(".") if lines else type(e).__name__


# Opcodes by which a pickle calls or imports something: loading it runs code.
_CODE_OPCODES = frozenset({"GLOBAL", "STACK_GLOBAL", "REDUCE", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX"})


def _is_plain_pickle(path: Path) -> bool:
    """A complete bare pickle stream (not torch's zip format) that imports or calls
    something; read with pickletools, which parses opcodes and runs none."""
    try:
        with open(path, "rb") as f:
            ops = {op.name for op, _, _ in pickletools.genops(f)}
    except Exception:  # noqa: BLE001 - not a well-formed pickle: a damaged file
        return False
    return bool(ops & _CODE_OPCODES)


def _read(path: Path, allow_pickle: bool) -> tuple[nn.Module, dict, str, str]:
    """Returns (network, metadata, form, arch) for the file at ``path``."""
    if _is_torchscript(path):
        try:
            net = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:  # noqa: BLE001 - torch raises many kinds here
            raise ModelLoadError(f"{path}: corrupt TorchScript archive ({e})") from e
        return net, {}, "torchscript", type(net).__name__
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses a pickled class by name ("Unsupported global"); any other
        # unpickling error is a damaged file, which no opt-in would fix.
        found = re.search(r"unsupported(?: global:)? GLOBAL ([\w.]+)", str(e), re.I)
        if not found and _is_plain_pickle(path):
            raise ModelLoadError(
                f"{path} is a plain pickle stream, not a torch file: loading it runs code "
                "from the file, so it is refused. Re-save the model with torch.save(state_dict)."
            ) from e
        if not found:
            raise ModelLoadError(
                f"{path}: not a readable model file, truncated or corrupt ({_first_line(e)})"
            ) from e
        if not allow_pickle:
            raise ModelLoadError(
                f"{path} holds a whole pickled module ({found.group(1)}); loading it runs code "
                "from the file. "
                "If you trust it, allow it with FOOD11_ALLOW_PICKLE=1 "
                "(gourmetgram serve-api --allow-pickle), or re-save it as a state_dict."
            ) from e
        return _read_pickle(path)
    except Exception as e:  # noqa: BLE001 - garbage makes the unpickler raise anything
        raise ModelLoadError(
            f"{path}: not a readable model file, truncated or corrupt ({_first_line(e)})"
        ) from e

    if isinstance(obj, Mapping) and ARCHIVE_KEY in obj:
        if obj.get(ARCHIVE_KEY) != ARCHIVE_FORMAT:
            raise ModelLoadError(f"{path}: unknown archive format {obj.get(ARCHIVE_KEY)!r}")
        arch = obj.get("arch")
        builders = _architectures()
        if arch not in builders:
            raise ModelLoadError(f"{path}: unknown architecture {arch!r}; known: {sorted(builders)}")
        meta = dict(obj.get("meta") or {})
        meta.setdefault("class_names", list(FOOD11_CLASSES))
        net = builders[arch](meta)
        _load_state_dict_strict(net, obj["state_dict"], str(path))
        return net, meta, "gourmetgram-archive", arch

    sd = _state_dict_of(obj)
    if sd is None:
        raise ModelLoadError(
            f"{path}: holds a {type(obj).__name__}, not a state_dict, TorchScript archive "
            "or model archive"
        )
    net = build_mobilenet_v2()
    _load_state_dict_strict(net, sd, f"{path} (read as the lab's MobileNetV2 state_dict)")
    return net, {}, "state_dict", "mobilenet_v2_food11"


def _read_pickle(path: Path) -> tuple[nn.Module, dict, str, str]:
    log.warning("unpickling a whole module from %s (explicitly allowed)", path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - arbitrary code may raise anything
        raise ModelLoadError(f"{path}: the pickled module could not be loaded ({e})") from e
    if not isinstance(obj, nn.Module):
        raise ModelLoadError(f"{path}: the pickle holds a {type(obj).__name__}, not a module")
    return obj, {}, "pickled-module", type(obj).__name__


# Batch sizes a CUDA graph is captured for; a batch runs in the smallest that fits.
GRAPH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class LoadedModel:
    """A model ready to serve: network on its device, metadata, warm.

    On CUDA the network runs in fp16 (converted once, not autocast: autocast's cast
    kernels made MobileNetV2 slower than fp32, see docs/api.md) and each batch size is
    replayed from a CUDA graph, since at these sizes kernel launches, not arithmetic,
    bound the time. A network that cannot be captured runs eagerly."""

    def __init__(self, net: nn.Module, info: ModelInfo, device: torch.device,
                 cuda_graphs: bool = True):
        self.info = info
        self.device = device
        self.module = FeatureClassifier(net).eval().to(device)
        if device.type == "cpu" or device.type == "cuda":
            self.module = self.module.to(memory_format=torch.channels_last)
        self.dtype = torch.float16 if device.type == "cuda" else torch.float32
        if device.type == "cuda":
            self.module = self.module.half()
        self.cuda_graphs = cuda_graphs and device.type == "cuda"
        self._graphs: dict[int, tuple] = {}
        pp = info.preprocessing
        # Normalisation folded into one multiply-add on uint8 input: x*scale + bias.
        std = torch.tensor(pp.std, dtype=torch.float32)
        mean = torch.tensor(pp.mean, dtype=torch.float32)
        self._scale = (1.0 / (255.0 * std)).view(1, 3, 1, 1).to(device, self.dtype)
        self._bias = (-mean / std).view(1, 3, 1, 1).to(device, self.dtype)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.class_names

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``images``: uint8 array (N, H, W, 3). Returns softmax probabilities (N, C)
        and the penultimate features (N, D) of the same forward pass (or None).
        Called from one thread at a time (the batcher's)."""
        x = torch.from_numpy(images).to(self.device, non_blocking=True)
        # NHWC -> NCHW view: already channels_last in memory, no copy.
        x = x.permute(0, 3, 1, 2).to(self.dtype).mul_(self._scale).add_(self._bias)
        with torch.inference_mode():
            if self.cuda_graphs:
                logits, feats = self._graphed(x)
            else:
                logits, feats = self.module(x)
            probs = torch.softmax(logits.float(), dim=1)
        return probs.cpu().numpy(), None if feats is None else feats.float().cpu().numpy()

    def warm_up(self, max_batch: int) -> None:
        """Runs the batch sizes the batcher will use (on CUDA: captures their graphs), so
        the first requests are not slow."""
        c = self.info.preprocessing.crop
        for n in sorted({1, 2, max_batch} | {b for b in GRAPH_BUCKETS if b <= max_batch}):
            self.infer(np.zeros((n, c, c, 3), dtype=np.uint8))

    def _graphed(self, x: torch.Tensor):
        n = x.shape[0]
        bucket = next((b for b in GRAPH_BUCKETS if b >= n), None)
        entry = self._graphs.get(bucket) if bucket else None
        if bucket and entry is None:
            entry = self._capture(bucket, x.shape[1:])
        if entry is None:
            return self.module(x)
        graph, static_in, (logits, feats) = entry
        static_in[:n].copy_(x)
        graph.replay()
        return logits[:n], None if feats is None else feats[:n]

    def _capture(self, bucket: int, shape: torch.Size):
        static_in = torch.zeros((bucket, *shape), device=self.device, dtype=self.dtype)
        static_in = static_in.to(memory_format=torch.channels_last)
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    self.module(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                outs = self.module(static_in)
        except Exception as e:  # noqa: BLE001 - any capture failure: run eagerly
            log.warning("CUDA graph capture failed (%s); running the model eagerly", e)
            self.cuda_graphs = False
            return None
        self._graphs[bucket] = (graph, static_in, outs)
        return self._graphs[bucket]


def pick_device(setting: str) -> torch.device:
    if setting == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("FOOD11_DEVICE=cuda but no CUDA device is available")
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def load_model(
    path: Path,
    *,
    allow_pickle: bool = False,
    device: str = "auto",
    version: str | None = None,
) -> LoadedModel:
    """Loads, checks and warms a model; every failure is a ``ModelLoadError``."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist")
    digest = sha256_of(path)
    net, meta, form, arch = _read(path, allow_pickle)
    class_names = tuple(meta.get("class_names", FOOD11_CLASSES))
    try:
        pp = Preprocessing.from_dict(meta.get("preprocessing", {}))
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"{path}: bad preprocessing metadata ({e})") from e
    info = ModelInfo(
        version=version or str(meta.get("version") or f"{path.stem}-{digest[:8]}"),
        sha256=digest,
        form=form,
        arch=arch,
        path=str(path),
        class_names=class_names,
        preprocessing=pp,
        device=str(pick_device(device)),
    )
    model = LoadedModel(net, info, torch.device(info.device))
    probe = np.zeros((1, pp.crop, pp.crop, 3), dtype=np.uint8)
    try:
        probs, feats = model.infer(probe)
    except Exception as e:  # noqa: BLE001 - any failure here means a wrong network
        raise ModelLoadError(f"{path}: the network fails on a {pp.crop}x{pp.crop} image ({e})") from e
    if probs.ndim != 2 or probs.shape[1] != len(class_names):
        raise ModelLoadError(
            f"{path}: the network outputs {probs.shape[-1]} classes, expected "
            f"{len(class_names)} ({', '.join(class_names)})"
        )
    info.feature_dim = None if feats is None else int(feats.shape[1])
    return model


def save_archive(path: Path, net: nn.Module, arch: str, meta: dict) -> None:
    """Writes our archive form (loadable with ``weights_only=True``) atomically."""
    buf = io.BytesIO()
    torch.save(
        {ARCHIVE_KEY: ARCHIVE_FORMAT, "arch": arch, "state_dict": net.state_dict(), "meta": meta},
        buf,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
