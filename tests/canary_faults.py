"""Bad canaries made from outside the product, for the controller's tests and its
scorecard (bench/bench_rollouts.py): model files that load like any other, and an API
instance whose real app (``app_api.main.create_app``) has one fault wrapped inside it.

No switch in production code makes a canary bad:

- model files: random weights (the wrong model), the demo model with its first
  convolution's input channels reversed (exactly the demo model fed BGR instead of RGB:
  a preprocessing bug), the demo model with one class's logits raised (a shifted
  class mix);
- ``FaultyApiServer``: ``gunicorn`` on ``create_app()`` of this module, which is the
  real app with an ASGI fault innermost, inside the app's metrics middleware, so the
  app's own metrics see the fault as they would see a slow or failing model:
  ``slow:SECONDS`` (every /predict waits that long first) or ``errors:K`` (HTTP 500 for
  the inputs ``fails_on(body, K)`` picks, about one in K, always the same ones).
"""

from __future__ import annotations

import asyncio
import os
import sys
import zlib
from pathlib import Path

import torch

from tests.procs import Proc, child_env, free_port

FAULT_ENV = "GOURMETGRAM_TEST_CANARY_FAULT"


# -- model files ------------------------------------------------------------------------

def random_weights_model(out: Path, seed: int = 0) -> Path:
    """The lab's MobileNetV2 with random weights: answers fast and with HTTP 200, wrongly."""
    from app_api.model import build_mobilenet_v2

    torch.manual_seed(seed)
    torch.save(build_mobilenet_v2().state_dict(), out)
    return out


def _demo_net(demo_model: Path):
    from app_api.demo_model import build_architecture

    archive = torch.load(demo_model, map_location="cpu", weights_only=True)
    net = build_architecture(archive["meta"])
    net.load_state_dict(archive["state_dict"])
    return net, archive


def _save_demo(out: Path, net, archive, version: str) -> Path:
    from app_api.model import save_archive

    save_archive(out, net.eval(), archive["arch"], {**archive["meta"], "version": version})
    return out


def swapped_channels_model(demo_model: Path, out: Path) -> Path:
    """The demo model with the first convolution's input channels reversed: its output on
    an RGB image is the demo model's on the BGR image (the preprocessing's mean and std
    are the same for all three channels, so the swap commutes with them)."""
    net, archive = _demo_net(demo_model)
    conv = net.body.conv_stem
    with torch.no_grad():
        conv.weight.copy_(conv.weight.flip(1))
    return _save_demo(out, net, archive, "bgr-bug")


def model_inputs(model, photos: list[bytes]):
    """``photos`` decoded and preprocessed as the API does for ``model``: one uint8 batch."""
    import numpy as np

    from app_api.preprocess import image_from_bytes

    pp = model.info.preprocessing
    return np.stack([image_from_bytes(b, pp, 10**8) for b in photos])


def class_shift_model(demo_model: Path, out: Path, photos: list[bytes], share: float = 0.25,
                      class_name: str = "Dessert") -> Path:
    """The demo model with ``class_name``'s logits raised just enough that ``share`` of
    ``photos`` (the traffic it will see) moves to that class: a shifted class mix of a
    known size whatever the photos are (the shared food photos, or the synthetic ones
    where a clone has none). The head pools its ImageNet rows by log-sum-exp, so adding
    s to the class's rows adds s to its logit; a photo moves when s exceeds the gap
    between its top logit and the class's (the log of their probabilities' ratio)."""
    import numpy as np

    from app_api.classes import FOOD11_CLASSES
    from app_api.model import load_model

    target = FOOD11_CLASSES.index(class_name)
    demo = load_model(demo_model, device="cpu")
    probs, _ = demo.infer(model_inputs(demo, photos))
    others = np.delete(probs, target, axis=1).max(axis=1)
    gaps = np.sort(np.log(others) - np.log(probs[:, target]))
    k = max(1, min(len(gaps) - 1, round(share * len(gaps))))
    shift = float((gaps[k - 1] + gaps[k]) / 2)
    net, archive = _demo_net(demo_model)
    rows = net.head.group_of_row == target
    with torch.no_grad():
        net.head.linear.bias[rows] += shift
    return _save_demo(out, net, archive, "class-shift")


# -- an API instance with a fault inside the real app ------------------------------------

def fails_on(body: bytes, one_in: int) -> bool:
    """The inputs the ``errors`` fault answers with HTTP 500: a fixed pick, about one in
    ``one_in`` (by CRC-32 of the request body)."""
    return zlib.crc32(body) % one_in == 0


class Fault:
    """ASGI middleware put innermost in the real app (inside its metrics middleware)."""

    def __init__(self, app, kind: str, arg: float):
        self.app = app
        self.kind = kind
        self.arg = arg

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") != "/predict":
            await self.app(scope, receive, send)
            return
        if self.kind == "slow":
            await asyncio.sleep(self.arg)
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if fails_on(body, int(self.arg)):
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"injected fault"})
            return
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def create_app():
    """The real app with the fault named in ``GOURMETGRAM_TEST_CANARY_FAULT`` innermost."""
    from starlette.middleware import Middleware

    from app_api.main import create_app as real

    kind, _, arg = os.environ[FAULT_ENV].partition(":")
    if kind not in ("slow", "errors"):
        raise ValueError(f"{FAULT_ENV}={kind!r}: expected slow:SECONDS or errors:K")
    app = real()
    # user_middleware[0] is outermost; appended last, the fault runs inside the metrics.
    app.user_middleware.append(Middleware(Fault, kind=kind, arg=float(arg)))
    return app


class FaultyApiServer:
    """The real API under gunicorn + uvicorn (the product's gunicorn config), with a
    fault (``slow:0.05``, ``errors:6``) inside its app; same interface as ApiServer."""

    def __init__(self, fault: str, tmp: Path, model: Path, variant: str = "canary",
                 port: int | None = None, model_version: str = ""):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.variant = variant
        metrics_dir = tmp / f"metrics-{variant}-{self.port}"
        metrics_dir.mkdir(parents=True, exist_ok=True)
        env = child_env(
            FOOD11_HOST="127.0.0.1", FOOD11_PORT=str(self.port), FOOD11_VARIANT=variant,
            FOOD11_MODEL=str(model), FOOD11_MODEL_VERSION=model_version, FOOD11_WORKERS="1",
            FOOD11_DEVICE="cpu", FOOD11_STATE_DIR=str(tmp / f"state-{variant}-{self.port}"),
            PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), OMP_NUM_THREADS="1",
            **{FAULT_ENV: fault},
        )
        argv = [sys.executable, "-m", "gunicorn", "-c", "python:app_api.gunicorn_conf",
                "tests.canary_faults:create_app()"]
        self.proc = Proc(argv, tmp / f"api-{variant}-{self.port}.log", env=env)

    def wait_ready(self, timeout: float = 90.0) -> FaultyApiServer:
        self.proc.wait_http(self.url + "/readyz", timeout)
        return self

    def stop(self) -> None:
        self.proc.stop()
