"""The model API app factory: ``create_app(settings)`` builds one FastAPI app per
settings object, so tests and each gunicorn worker build their own."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app_api import metrics
from app_api.batching import Batcher
from app_api.drift import DriftReferenceError
from app_api.drift_monitor import start_monitor
from app_api.inference import DEFAULT_MAX_BATCH, OnnxModel, load_from_settings
from app_api.model_info import ModelLoadError
from app_api.preprocess import BadInput, Limits, image_from_base64, image_from_bytes
from app_api.settings import DEFAULT_DEMO_MODEL, ApiSettings
from app_api.shadow import HEADER as SHADOW_HEADER
from app_api.shadow import ShadowLog
from app_api.thread_names import name_os_thread
from gourmetgram.host_header import HostCheckASGI

log = logging.getLogger("app_api")


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    image: str = Field(description="Base64 JPEG/PNG/WebP/...; a data: URL prefix is accepted.")


class PredictResponse(BaseModel):
    prediction_id: str = Field(
        description="Random id of this answer (also the X-Prediction-Id header); "
        "the web app's feedback refers to it."
    )
    prediction: str
    probability: float
    model_version: str
    variant: str


# Bodies read as the raw image; JSON otherwise (no Content-Type is read as JSON too).
RAW_TYPES = ("image/", "application/octet-stream")
JSON_TYPES = ("application/json", "")
PREDICT_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": PredictRequest.model_json_schema()},
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}


class BodyError(Exception):
    """A body that is neither form: answered like FastAPI's validation errors (422) or as
    an unsupported type (415), with ``detail`` never echoing the body."""

    def __init__(self, status: int, detail):
        super().__init__(str(detail))
        self.status = status
        self.detail = detail


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def parse_json_body(body: bytes) -> PredictRequest:
    try:
        return PredictRequest.model_validate_json(body)
    except ValidationError as e:
        errors = json.loads(e.json(include_url=False, include_input=False, include_context=False))
        for err in errors:
            err["loc"] = ["body", *err["loc"]]
        raise BodyError(422, errors) from None


class BodyLimit:
    """Answers 413 before a body over the limit reaches JSON parsing: by Content-Length
    from the header alone, and for a chunked body (no length) by reading it here, up to
    the limit, then handing it on. (A limit raised while the app reads would surface as
    FastAPI's 400 "error parsing the body".)"""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = None
        if length is not None:
            if length > self.max_bytes:
                await self._reject(send)
                return
            await self.app(scope, receive, send)
            return
        if scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        parts, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body = message.get("body", b"")
            seen += len(body)
            if seen > self.max_bytes:
                await self._reject(send)
                return
            parts.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(parts), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send):
        body = (
            b'{"detail":"request body is over the limit of %d bytes"}' % self.max_bytes
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _resolve_model_path(settings: ApiSettings):
    if settings.model is not None:
        return settings.model
    if not DEFAULT_DEMO_MODEL.exists():
        from app_api.demo_model import build_demo_model

        log.info("no model configured: building the demo model at %s", DEFAULT_DEMO_MODEL)
        build_demo_model(DEFAULT_DEMO_MODEL)
    return DEFAULT_DEMO_MODEL


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings()
    state: dict = {"model": None, "version": "loading", "drift": None}
    shadow = ShadowLog(settings.shadow_dir, settings.shadow_max_bytes) if settings.shadow_dir else None
    # Called with each prediction's features after the response is computed (drift).
    feature_sinks: list[Callable[[np.ndarray], None]] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            model = load_from_settings(_resolve_model_path(settings), settings)
        except ModelLoadError as e:
            log.error("cannot serve: %s", e)
            raise
        info = model.info
        max_batch = settings.max_batch or DEFAULT_MAX_BATCH[info.runtime]
        model.warm_up(max_batch)
        try:
            drift = start_monitor(settings, info)
        except DriftReferenceError as e:
            log.error("cannot serve: %s", e)
            raise
        if drift is not None:
            feature_sinks.append(drift.submit)
        state["drift"] = drift
        state["model"] = model
        state["version"] = info.version
        # Intra-op threads of a forward pass that runs alone (0: no solo session).
        state["solo_threads"] = (
            settings.solo_threads if isinstance(model, OnnxModel) and model.solo else 0)
        metrics.MODEL_INFO.labels(
            settings.variant, info.version, info.sha256, info.form, info.device
        ).set(1)
        # CUDA graphs replay from shared buffers: one inference thread there.
        threads = 1 if info.device.startswith("cuda") else settings.inference_threads
        batcher = Batcher(model.infer, max_batch, on_batch=_observe_batch, threads=threads)
        batcher.start()
        state["batcher"] = batcher
        state["decode_pool"] = ThreadPoolExecutor(
            max_workers=settings.decode_threads, thread_name_prefix="decode",
            initializer=name_os_thread,
        )
        log.info(
            "serving %s model %s (%s, sha256 %s) on %s with %s, %d inference thread(s), "
            "batches of up to %d, %d intra-op thread(s) for a forward pass that runs alone",
            settings.variant, info.version, info.form, info.sha256[:12], info.device,
            info.runtime, threads, max_batch, state["solo_threads"] or settings.torch_threads,
        )
        try:
            yield
        finally:
            await batcher.stop()
            state["decode_pool"].shutdown(wait=False, cancel_futures=True)
            if drift is not None:
                feature_sinks.remove(drift.submit)
                drift.stop()

    def _observe_batch(size: int, seconds: float) -> None:
        labels = (settings.variant, state["version"])
        metrics.BATCH_SIZE.labels(*labels).observe(size)
        metrics.INFERENCE_DURATION.labels(*labels).observe(seconds)

    app = FastAPI(
        title="Food-11 model API",
        version="1",
        lifespan=lifespan,
        description="Classifies food photos into the 11 Food-11 classes.",
        # A redirect to the slash-less path would be built from the client's Host header.
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.feature_sinks = feature_sinks
    app.state.serving = state

    @app.exception_handler(BadInput)
    async def _bad_input(request: Request, exc: BadInput):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(BodyError)
    async def _body_error(request: Request, exc: BodyError):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    limits = Limits(settings.max_aspect_ratio, settings.max_frames, settings.max_decoded_bytes)

    @app.post("/predict", response_model=PredictResponse, openapi_extra={"requestBody": PREDICT_BODY})
    async def predict(request: Request, response: Response):
        """JSON ``{"image": "<base64>"}`` (the lab's form) or the image's own bytes with
        ``Content-Type: image/jpeg`` (``image/png``, ..., ``application/octet-stream``)."""
        kind = media_type(request)
        body = await request.body()
        if kind.startswith(RAW_TYPES):
            decode, arg = image_from_bytes, body
        elif kind in JSON_TYPES or kind.endswith("+json"):
            decode, arg = image_from_base64, parse_json_body(body).image
        else:
            raise BodyError(415, (
                f"Content-Type {kind!r} is not accepted: send JSON {{\"image\": \"<base64>\"}} "
                "as application/json, or the image's bytes as image/jpeg, image/png, ..."
            ))
        model = state["model"]
        loop = asyncio.get_running_loop()
        labels = (settings.variant, model.info.version)
        with metrics.PREPROCESS_DURATION.labels(*labels).time():
            image = await loop.run_in_executor(
                state["decode_pool"], decode, arg, model.info.preprocessing,
                settings.max_pixels, limits,
            )
        probs, feats = await state["batcher"].submit(image)
        idx = int(np.argmax(probs))
        confidence = float(probs[idx])
        name = model.class_names[idx]
        metrics.PREDICTION_CONFIDENCE.labels(*labels).observe(confidence)
        metrics.PREDICTED_CLASS.labels(name, *labels).inc()
        if feats is not None:
            for sink in feature_sinks:
                sink(feats)
        shadow_id = request.headers.get(SHADOW_HEADER)
        if shadow is not None and shadow_id:
            shadow.record(shadow_id, name, confidence)
        prediction_id = uuid.uuid4().hex
        response.headers["X-Prediction-Id"] = prediction_id
        return PredictResponse(
            prediction_id=prediction_id,
            prediction=name,
            probability=confidence,
            model_version=model.info.version,
            variant=settings.variant,
        )

    @app.get("/healthz")
    async def healthz():
        return {"status": "alive", "variant": settings.variant}

    @app.get("/readyz")
    async def readyz():
        if state["model"] is None:
            return JSONResponse({"ready": False}, status_code=503)
        return {"ready": True, "variant": settings.variant, "model_version": state["version"]}

    @app.get("/model")
    async def model_info():
        if state["model"] is None:
            return JSONResponse({"detail": "model not loaded yet"}, status_code=503)
        drift = state["drift"]
        return {"variant": settings.variant, **state["model"].info.as_dict(),
                "max_batch": state["batcher"].max_batch, "solo_threads": state["solo_threads"],
                "drift": drift.status() if drift is not None else {"state": "off"}}

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint():
        body, content_type = metrics.render_metrics()
        return Response(body, media_type=content_type)

    # Last added is outermost: the metrics see the body limit's 413s and bad Hosts too.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(HostCheckASGI)
    app.add_middleware(
        metrics.MetricsMiddleware, variant=settings.variant, version_ref=lambda: state["version"]
    )
    return app

