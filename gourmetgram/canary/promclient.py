"""A small reader of Prometheus's HTTP API for the canary analysis: instant queries,
and the per-variant window counts (``increase()`` over the window) that
``gourmetgram.canary.analysis`` judges."""

from __future__ import annotations

import math
import time

import requests

from gourmetgram.canary.analysis import Histogram, OnlineAccuracy, VariantWindow

VARIANTS = ("production", "canary")
UNIT_PREFIX = "food11-api@"
# The counters of nginx/mtail/gourmetgram.mtail (label ``upstream``: host:port).
MTAIL_PREFIX = "gourmetgram_nginx_upstream"


class PrometheusUnavailable(Exception):
    """Prometheus did not answer (down, timeout, 5xx): the controller pauses."""


class PrometheusQueryError(Exception):
    """Prometheus refused a query (4xx): a bug or a bad selector setting."""


class PromClient:
    def __init__(self, url: str, timeout: float = 5.0, session: requests.Session | None = None):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()

    def query(self, expr: str, at: float | None = None) -> list[tuple[dict, float]]:
        """Instant vector query -> [(labels, value)]; NaN values are kept as NaN."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        try:
            r = self.session.get(f"{self.url}/api/v1/query", params=params, timeout=self.timeout)
        except requests.RequestException as e:
            # The exception's text repeats the whole query URL; the type says enough.
            raise PrometheusUnavailable(f"{self.url} unreachable ({type(e).__name__})") from e
        if r.status_code >= 500:
            raise PrometheusUnavailable(f"{self.url}: HTTP {r.status_code}")
        try:
            body = r.json()
        except ValueError as e:
            raise PrometheusUnavailable(f"{self.url}: not a Prometheus answer ({e})") from e
        if r.status_code >= 400 or body.get("status") != "success":
            raise PrometheusQueryError(f"{expr}: {body.get('error', r.status_code)}")
        data = body["data"]
        if data.get("resultType") != "vector":
            raise PrometheusQueryError(f"{expr}: expected a vector, got {data.get('resultType')}")
        return [(item["metric"], float(item["value"][1])) for item in data["result"]]


def _le(v: str) -> float:
    return math.inf if v in ("+Inf", "Inf", "inf") else float(v)


class WindowReader:
    """Reads both variants' numbers over the last ``window_s`` seconds, all queries
    evaluated at one instant so they describe the same window."""

    def __init__(self, client: PromClient, window_s: float, selector: str = "",
                 handler: str = "/predict", upstreams: dict[str, str] | None = None):
        """``upstreams`` maps a variant to its API's ``host:port`` as Nginx logs it
        (mtail's ``upstream`` label)."""
        self.client = client
        self.upstreams = upstreams or {}
        self.window = f"{max(1, round(window_s))}s"
        self.sel = selector.strip().strip(",")
        self.handler = handler

    def _m(self, extra: str = "") -> str:
        parts = [p for p in (self.sel, extra) if p]
        return "{" + ",".join(parts) + "}"

    def _sum_by(self, metric: str, by: str, extra: str, at: float) -> list[tuple[dict, float]]:
        labels = "variant" + (f", {by}" if by else "")
        expr = f"sum by ({labels}) (increase({metric}{self._m(extra)}[{self.window}]))"
        return self.client.query(expr, at)

    def read(self, at: float | None = None) -> dict[str, VariantWindow]:
        at = time.time() if at is None else at
        h = f'handler="{self.handler}"'
        out = {v: VariantWindow() for v in VARIANTS}

        for labels, value in self._sum_by("http_requests_total", "status", h, at):
            w = out.get(labels.get("variant"))
            if w is None:
                continue
            w.requests += value
            if labels.get("status") == "5xx":
                w.errors += value
        for metric, extra, attr in (("http_request_duration_seconds", h, "latency"),
                                    ("prediction_confidence", "", "confidence")):
            for variant, hist in self._histograms(metric, extra, at).items():
                if variant in out:
                    setattr(out[variant], attr, hist)
        classes = self._sum_by("predicted_class_total", "class_name", "", at)
        for labels, value in classes:
            w = out.get(labels.get("variant"))
            if w is not None:
                w.classes = (w.classes or {}) | {labels.get("class_name", "?"): value}
        for metric, attr in (("drift_events_total", "drift_events"),
                             ("drift_samples_total", "drift_samples")):
            for labels, value in self._sum_by(metric, "", "", at):
                w = out.get(labels.get("variant"))
                if w is not None:
                    setattr(w, attr, value)
        self._availability(out, at)
        for variant, estimate in self._accuracy(at).items():
            if variant in out:
                out[variant].accuracy = estimate
        return out

    def _availability(self, out: dict[str, VariantWindow], at: float) -> None:
        q = self.client.query
        for labels, value in q(f"avg by (variant) (avg_over_time(up{self._m()}[{self.window}]))", at):
            if labels.get("variant") in out:
                out[labels["variant"]].up = value
        restarts = q('sum by (name) (increase(node_systemd_service_restart_total'
                     f'{{name=~"{UNIT_PREFIX}.+[.]service"}}[{self.window}]))', at)
        for labels, value in restarts:
            variant = labels.get("name", "").removeprefix(UNIT_PREFIX).removesuffix(".service")
            if variant in out:
                out[variant].restarts = value
        by_addr = {addr: v for v, addr in self.upstreams.items()}
        for metric, attr in ((f"{MTAIL_PREFIX}_tries_total", "upstream_tries"),
                             (f"{MTAIL_PREFIX}_failures_total", "upstream_failures")):
            for labels, value in q(f"sum by (upstream) (increase({metric}[{self.window}]))", at):
                variant = by_addr.get(labels.get("upstream", ""))
                if variant in out:
                    setattr(out[variant], attr, (getattr(out[variant], attr) or 0.0) + value)

    def _accuracy(self, at: float) -> dict[str, OnlineAccuracy]:
        """The web app's feedback_accuracy* gauges of each variant's current model version
        (the one model_info says it serves), not of versions it served before."""
        current = (f'label_replace(max by (variant, version) (model_info{self._m()}), '
                   '"model_version", "$1", "version", "(.+)")')
        parts = {}
        for suffix in ("", "_lower", "_upper", "_labels"):
            expr = (f"max by (variant, model_version) (feedback_accuracy{suffix}) "
                    f"and on (variant, model_version) {current}")
            parts[suffix] = {lab.get("variant"): v for lab, v in self.client.query(expr, at)}
        return {
            variant: OnlineAccuracy(acc, parts["_lower"].get(variant, float("nan")),
                                    parts["_upper"].get(variant, float("nan")),
                                    parts["_labels"].get(variant, float("nan")))
            for variant, acc in parts[""].items()
        }

    def _histograms(self, metric: str, extra: str, at: float) -> dict[str, Histogram]:
        """One histogram per variant from three queries (buckets, sum, count)."""
        buckets: dict[str, dict[float, float]] = {}
        for lab, val in self._sum_by(f"{metric}_bucket", "le", extra, at):
            if "le" in lab and "variant" in lab:
                buckets.setdefault(lab["variant"], {})[_le(lab["le"])] = val
        sums = {lab.get("variant"): val for lab, val in self._sum_by(f"{metric}_sum", "", extra, at)}
        counts = {lab.get("variant"): val for lab, val in self._sum_by(f"{metric}_count", "", extra, at)}
        return {
            variant: Histogram.from_buckets(
                b, sums.get(variant, float("nan")), counts.get(variant, float("nan"))
            )
            for variant, b in buckets.items()
        }
