"""Prometheus metrics of the API, with the lab's names and labels plus ``variant`` and
``model_version`` on every series, so dashboards and the canary analysis can compare
production and canary. Under gunicorn they run in prometheus_client's multiprocess
mode (``PROMETHEUS_MULTIPROC_DIR`` set by ``gourmetgram serve-api`` before any
worker starts), so each scrape sums all workers.
"""

from __future__ import annotations

import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_mp

VERSION_LABELS = ("variant", "model_version")
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)
CONFIDENCE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(11))
# Paths counted under their own handler label; anything else is "none" (no cardinality blow-up).
KNOWN_HANDLERS = frozenset({"/predict", "/healthz", "/readyz", "/model", "/metrics"})
# Methods counted under their own name; any other (a client may invent one) is "other".
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"

HTTP_REQUESTS = Counter(
    "http_requests_total",
    "Requests by handler, method and status class (2xx/4xx/5xx).",
    ("handler", "method", "status", *VERSION_LABELS),
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from the request's arrival to the end of the response.",
    ("handler", "method", *VERSION_LABELS),
    buckets=LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge(
    "http_requests_in_flight",
    "Requests being handled now.",
    VERSION_LABELS,
    multiprocess_mode="livesum",
)
PREDICTION_CONFIDENCE = Histogram(
    "prediction_confidence",
    "Probability of the predicted class.",
    VERSION_LABELS,
    buckets=CONFIDENCE_BUCKETS,
)
PREDICTED_CLASS = Counter(
    "predicted_class_total", "Predictions by class.", ("class_name", *VERSION_LABELS)
)
PREPROCESS_DURATION = Histogram(
    "preprocess_duration_seconds",
    "Base64 decode, image decode, resize and crop, per image.",
    VERSION_LABELS,
    buckets=STAGE_BUCKETS,
)
INFERENCE_DURATION = Histogram(
    "inference_duration_seconds",
    "Forward pass of one batch.",
    VERSION_LABELS,
    buckets=STAGE_BUCKETS,
)
BATCH_SIZE = Histogram(
    "inference_batch_size",
    "Images per forward pass (concurrent requests are batched).",
    VERSION_LABELS,
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
MODEL_INFO = Gauge(
    "model_info",
    "1 for the model this instance serves.",
    ("variant", "version", "sha256", "form", "device"),
    multiprocess_mode="livemax",
)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def render_metrics() -> tuple[bytes, str]:
    """The exposition for a scrape: all workers' values when in multiprocess mode."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        prom_mp.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Pure ASGI middleware (no per-request task overhead) that counts every request and
    labels every response with the variant and model version that served it."""

    def __init__(self, app, variant: str, version_ref):
        self.app = app
        self.variant = variant
        self.version_ref = version_ref  # callable: the version is known only after start-up

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        handler = path if path in KNOWN_HANDLERS else "none"
        method = method_label(scope.get("method", "GET"))
        labels = (self.variant, self.version_ref())
        status_holder = {"code": 500}
        # Every answer, errors included, says who served it (Nginx logs it, clients count it).
        who = [
            (b"x-model-variant", self.variant.encode()),
            (b"x-model-version", labels[1].encode("latin-1", "replace")),
        ]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status_holder["code"] = message["status"]
                message["headers"] = [*message.get("headers", ()), *who]
            await send(message)

        start = time.perf_counter()
        gauge = IN_FLIGHT.labels(*labels)
        gauge.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            gauge.dec()
            HTTP_DURATION.labels(handler, method, *labels).observe(time.perf_counter() - start)
            HTTP_REQUESTS.labels(
                handler, method, f"{status_holder['code'] // 100}xx", *labels
            ).inc()

# Drift detection (app_api/drift.py). Each worker runs its own detector; counters sum
# over workers, so rate(drift_events_total) / rate(drift_samples_total) is the alarm
# rate per sample (1/ERT when nothing drifts).
DRIFT_TEST_STAT_BUCKETS = (
    -0.02, -0.01, -0.005, 0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
    0.5, 0.75, 1.0, 1.5,
)
DRIFT_EVENTS = Counter(
    "drift_events_total",
    "Drift alarms: the windowed MMD^2 statistic above the calibrated threshold.",
    VERSION_LABELS,
)
DRIFT_TEST_STAT = Histogram(
    "drift_test_stat",
    "MMD^2 between the reference set and the window of the latest samples, per sample.",
    VERSION_LABELS,
    buckets=DRIFT_TEST_STAT_BUCKETS,
)
DRIFT_THRESHOLD = Gauge(
    "drift_threshold",
    "Calibrated threshold of drift_test_stat after the first window (from the reference).",
    VERSION_LABELS,
    multiprocess_mode="livemax",
)
DRIFT_SAMPLES = Counter(
    "drift_samples_total", "Samples tested by the drift detector.", VERSION_LABELS
)
DRIFT_DROPPED = Counter(
    "drift_samples_dropped_total",
    "Samples not tested because the drift queue was full (the response never waits).",
    VERSION_LABELS,
)
DRIFT_ENABLED = Gauge(
    "drift_enabled",
    "1 when a drift reference is loaded, 0 when drift detection is off.",
    VERSION_LABELS,
    multiprocess_mode="livemax",
)
DRIFT_STATES = ("off", "bootstrapping", "armed")
DRIFT_STATE = Gauge(
    "drift_detector_state",
    "1 for the drift detector's state: off, bootstrapping (collecting the first predictions "
    "as its reference) or armed (testing every prediction).",
    (*VERSION_LABELS, "state"),
    multiprocess_mode="livemax",
)
DRIFT_REFERENCE_SAMPLES = Gauge(
    "drift_reference_samples",
    "Samples in the drift reference: collected so far while bootstrapping, then its size.",
    VERSION_LABELS,
    multiprocess_mode="livemax",
)
DRIFT_ERT = Gauge(
    "drift_ert_samples",
    "The reference's expected run time between false alarms, in samples per worker: "
    "drift_events_total / drift_samples_total is about 1 / this without drift.",
    VERSION_LABELS,
    multiprocess_mode="livemax",
)
