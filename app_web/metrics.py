"""Prometheus metrics of the web app. Under gunicorn they run in prometheus_client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` is set by ``gourmetgram serve-web``
before any worker imports this), so one scrape sums every worker."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_mp

LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0,
)
# Methods counted under their own name; any other (a client may invent one) is "other".
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
UPSTREAM_REASONS = ("timeout", "connection", "http_4xx", "http_5xx", "invalid_response")

REQUESTS = Counter(
    "web_requests_total",
    "Requests by route (the URL rule, 'none' when no route matched), method and status class.",
    ("route", "method", "status"),
)
DURATION = Histogram(
    "web_request_duration_seconds",
    "Time from the request's arrival to the response, model API call included.",
    ("route",),
    buckets=LATENCY_BUCKETS,
)
UPSTREAM_DURATION = Histogram(
    "web_upstream_request_duration_seconds",
    "Duration of each call to the model API (every attempt, failed ones included).",
    buckets=LATENCY_BUCKETS,
)
UPSTREAM_FAILURES = Counter(
    "web_upstream_failures_total",
    "Failed model API calls by reason; a connection error that the retry recovered counts too.",
    ("reason",),
)
for _reason in UPSTREAM_REASONS:
    UPSTREAM_FAILURES.labels(_reason)  # every series exists from the start, at 0


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


def render_metrics() -> tuple[bytes, str]:
    """The exposition for a scrape: all workers' values when in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prom_mp.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST
