"""What the API servers themselves counted, to check the load generator's own figures."""

from __future__ import annotations

import time

import requests
from prometheus_client.parser import text_string_to_metric_families


def predict_counts(api_url: str) -> dict[str, float]:
    """The server's own count of POST /predict by status class (http_requests_total)."""
    text = requests.get(api_url + "/metrics", timeout=5).text
    counts = {"2xx": 0.0, "4xx": 0.0, "5xx": 0.0}
    for fam in text_string_to_metric_families(text):
        if fam.name != "http_requests":
            continue
        for s in fam.samples:
            if (s.name == "http_requests_total" and s.labels.get("handler") == "/predict"
                    and s.labels.get("method") == "POST"):
                counts[s.labels["status"]] = counts.get(s.labels["status"], 0.0) + s.value
    return counts


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    return {k: round(after.get(k, 0) - before.get(k, 0)) for k in after}


def settled(read, expect_total: int, timeout: float = 5.0):
    """``read()`` once its total reaches ``expect_total`` (or after ``timeout``): the server
    counts a request just after sending its response, so a read can be a hair early."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if _total(value) >= expect_total or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def _total(value) -> float:
    if isinstance(value, dict):
        return sum(_total(v) for v in value.values())
    return value
