"""Calls the model API the way the lab does (base64 JSON to ``/predict``), with a
bounded wait: a connect and a read timeout, and a retry only after a connection
error (the request never reached the API, so sending it again is safe)."""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass

import requests

from app_web import metrics

log = logging.getLogger("app_web.api")

# Upstream statuses that mean "the API is not there" (Nginx in front answers them).
UNAVAILABLE = frozenset({502, 503, 504})
PREDICTION_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Prediction:
    prediction: str
    probability: float
    model_version: str
    variant: str
    seconds: float = 0.0
    prediction_id: str = ""

    def as_json(self) -> dict:
        return {
            "prediction_id": self.prediction_id,
            "prediction": self.prediction,
            "probability": self.probability,
            "model_version": self.model_version,
            "variant": self.variant,
        }


class UpstreamError(Exception):
    """The API call failed; ``status`` is what the web app answers, ``message`` is for people."""

    def __init__(self, reason: str, status: int, title: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.status = status
        self.title = title
        self.message = message


class ApiClient:
    def __init__(self, base_url: str, connect_timeout: float, read_timeout: float, retries: int):
        self.url = base_url.rstrip("/") + "/predict"
        self.timeout = (connect_timeout, read_timeout)
        self.retries = retries
        self._local = threading.local()  # one keep-alive session per worker thread

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            s.trust_env = False  # never route the internal call through a proxy from the env
            self._local.session = s
        return s

    def predict(self, image: bytes, client_id: str | None = None) -> Prediction:
        body = json.dumps({"image": base64.b64encode(image).decode("ascii")})
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "User-Agent": "gourmetgram-web"}
        if client_id:
            headers["X-Client-Id"] = client_id
        attempt = 0
        while True:
            start = time.perf_counter()
            try:
                resp = self._session().post(self.url, data=body, headers=headers, timeout=self.timeout)
            except requests.Timeout as e:
                self._observe(start, "timeout")
                connect = isinstance(e, requests.ConnectTimeout)
                if connect and attempt < self.retries:
                    attempt += 1
                    continue
                log.warning("model API %s: %s timeout", self.url, "connect" if connect else "read")
                if connect:
                    raise UpstreamError(
                        "timeout", 503, "The classifier is not reachable",
                        "We could not reach the food classifier right now. "
                        "Please try again in a minute.",
                    ) from None
                raise UpstreamError(
                    "timeout", 503, "The classifier is busy",
                    f"The food classifier did not answer within {self.timeout[1]:g} seconds. "
                    "Please try again in a moment.",
                ) from None
            except requests.ConnectionError as e:
                self._observe(start, "connection")
                if attempt < self.retries:
                    attempt += 1
                    time.sleep(0.1)
                    continue
                log.warning("model API %s unreachable: %s", self.url, e)
                raise UpstreamError(
                    "connection", 503, "The classifier is not reachable",
                    "We could not reach the food classifier right now. "
                    "Please try again in a minute.",
                ) from None
            except requests.RequestException as e:
                self._observe(start, "connection")
                log.warning("model API %s: %s", self.url, e)
                raise UpstreamError(
                    "connection", 503, "The classifier is not reachable",
                    "We could not reach the food classifier right now. Please try again in a minute.",
                ) from None
            elapsed = time.perf_counter() - start
            metrics.UPSTREAM_DURATION.observe(elapsed)
            return self._interpret(resp, elapsed)

    def _observe(self, start: float, reason: str) -> None:
        metrics.UPSTREAM_DURATION.observe(time.perf_counter() - start)
        metrics.UPSTREAM_FAILURES.labels(reason).inc()

    def _interpret(self, resp: requests.Response, elapsed: float) -> Prediction:
        status = resp.status_code
        if 400 <= status < 500:
            metrics.UPSTREAM_FAILURES.labels("http_4xx").inc()
            detail = _detail(resp)
            return_status = status if status in (400, 413, 415, 422) else 400
            raise UpstreamError(
                "http_4xx", return_status, "The classifier could not use this photo",
                detail or f"The food classifier refused this photo (error {status}).",
            )
        if status in UNAVAILABLE:
            metrics.UPSTREAM_FAILURES.labels("http_5xx").inc()
            log.warning("model API %s answered %d", self.url, status)
            raise UpstreamError(
                "http_5xx", 503, "The classifier is not available",
                "The food classifier is not available right now. Please try again in a minute.",
            )
        if status >= 500 or status < 200 or status >= 300:
            metrics.UPSTREAM_FAILURES.labels("http_5xx").inc()
            log.warning("model API %s answered %d: %s", self.url, status, resp.text[:200])
            raise UpstreamError(
                "http_5xx", 502, "The classifier failed",
                f"The food classifier failed on this photo (error {status}). Please try again.",
            )
        try:
            data = resp.json()
            prediction = data["prediction"]
            probability = float(data["probability"])
            if not isinstance(prediction, str) or not 0.0 <= probability <= 1.0:
                raise ValueError("bad field types")
        except (ValueError, KeyError, TypeError):
            metrics.UPSTREAM_FAILURES.labels("invalid_response").inc()
            log.warning("model API %s sent an answer we cannot read: %r", self.url, resp.text[:200])
            raise UpstreamError(
                "invalid_response", 502, "The classifier failed",
                "The food classifier sent an answer we could not read. Please try again.",
            ) from None
        return Prediction(
            prediction=prediction,
            probability=probability,
            model_version=str(data.get("model_version") or resp.headers.get("X-Model-Version")
                              or "unknown"),
            variant=str(data.get("variant") or resp.headers.get("X-Model-Variant") or "unknown"),
            seconds=elapsed,
            prediction_id=_prediction_id(data.get("prediction_id")
                                         or resp.headers.get("X-Prediction-Id")),
        )


def _prediction_id(given) -> str:
    """The API's id when it sent a well-formed one; the lab's API sends none, so the web
    app names the answer itself (feedback needs an id either way)."""
    if isinstance(given, str) and PREDICTION_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


def _detail(resp: requests.Response) -> str:
    """The API's own words: FastAPI's ``detail`` (a string, or a list of field errors)."""
    try:
        detail = resp.json().get("detail")
    except (ValueError, AttributeError):
        return resp.text.strip()[:300]
    if isinstance(detail, str):
        return detail[:300]
    if isinstance(detail, list):
        msgs = []
        for item in detail[:3]:
            if isinstance(item, dict):
                where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                msgs.append(f"{where}: {item.get('msg', '')}" if where else str(item.get("msg", "")))
        return "; ".join(msgs)[:300]
    return ""
