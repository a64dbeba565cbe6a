"""The canary analysis's ``accuracy`` check: skipped without labels, inconclusive below
the minimum (never a failure), calibrated under the null and able to catch a clear
drop, with the estimates made by the web app's own estimator from simulated labels;
and the Prometheus reader picks each variant's current model version."""

from __future__ import annotations

import http.server
import threading

import numpy as np
import pytest

from app_web.accuracy import estimate
from gourmetgram.canary.analysis import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    SKIPPED,
    OnlineAccuracy,
    VariantWindow,
    accuracy_check,
)
from gourmetgram.canary.analysis_settings import AnalysisSettings
from gourmetgram.canary.judge import judge
from gourmetgram.canary.promclient import PromClient, WindowReader
from tests.gourmetgram.canary.analysis_rig import PrometheusServer

ALPHA = 0.01
KW = dict(alpha=ALPHA, min_labels=50, max_drop=0.03)


def window(acc, lower, upper, labels) -> VariantWindow:
    return VariantWindow(accuracy=OnlineAccuracy(acc, lower, upper, labels))


def simulated(rng, accuracy: float, n: int) -> VariantWindow:
    """Labels of a random sample (weights 1..10 as the queues give), as the web app
    would estimate them."""
    w = rng.choice([1.0, 10.0], n)
    e = estimate(rng.random(n) < accuracy, w)
    return window(e.accuracy, e.lower, e.upper, e.labels)


@pytest.mark.parametrize(("canary", "production", "verdict", "words"), [
    (VariantWindow(), VariantWindow(), SKIPPED, "no labelled"),
    (VariantWindow(), window(0.9, 0.85, 0.94, 400), INCONCLUSIVE, "for canary yet"),
    (window(0.1, 0.0, 0.6, 5), window(0.9, 0.85, 0.94, 400), INCONCLUSIVE, "too few labels"),
    (window(float("nan"), 0, 1, 100), window(0.9, 0.85, 0.94, 400), INCONCLUSIVE, "NaN"),
    (window(0.70, 0.65, 0.75, 300), window(0.9, 0.87, 0.93, 400), FAIL, "lower by 20.0%"),
    (window(0.89, 0.85, 0.93, 300), window(0.9, 0.87, 0.93, 400), PASS, "no significant"),
    (window(0.95, 0.9, 0.98, 300), window(0.9, 0.87, 0.93, 400), PASS, "no significant"),
])
def test_accuracy_rules(canary, production, verdict, words):
    r = accuracy_check(canary, production, **KW)
    assert r.verdict == verdict and words in r.reason


def test_accuracy_calibration_and_power():
    rng = np.random.default_rng(7)
    null = [accuracy_check(simulated(rng, 0.85, 300), simulated(rng, 0.85, 300), **KW).verdict
            for _ in range(500)]
    assert null.count(FAIL) / 500 <= ALPHA + 0.01
    worse = [accuracy_check(simulated(rng, 0.70, 400), simulated(rng, 0.85, 400), **KW).verdict
             for _ in range(200)]
    assert worse.count(FAIL) / 200 >= 0.9


def test_accuracy_is_opt_in_and_registered():
    assert "accuracy" not in AnalysisSettings(state_dir="/nonexistent").checks
    s = AnalysisSettings(checks="error_rate,accuracy", state_dir="/nonexistent")
    results = judge(VariantWindow(requests=500), VariantWindow(requests=500), s)
    assert [(r.check, r.verdict) for r in results] == [("error_rate", PASS), ("accuracy", SKIPPED)]


class Exposition:
    """Serves a fixed metrics text per variant, as scrape targets."""

    def __init__(self, texts: dict[str, str]):
        outer = self
        self.texts = texts

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = outer.texts[self.path.strip("/").split("/")[0]].encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_reader_takes_the_current_model_version(tmp_path):
    def text(version: str, series: dict[str, tuple]) -> str:
        out = [f'model_info{{version="{version}"}} 1']
        for v, (acc, lo, up, n) in series.items():
            for suffix, value in (("", acc), ("_lower", lo), ("_upper", up), ("_labels", n)):
                out.append(f'feedback_accuracy{suffix}{{model_version="{v}"}} {value}')
        return "\n".join(out) + "\n"

    expo = Exposition({
        "production": text("v1", {"v1": (0.9, 0.88, 0.92, 500)}),
        # The canary served v1 before; its old labels must not count for v2.
        "canary": text("v2", {"v1": (0.5, 0.4, 0.6, 900), "v2": (0.8, 0.75, 0.85, 120)}),
    })
    prom = PrometheusServer(tmp_path, {})
    cfg = ["global:\n  scrape_interval: 1s\nscrape_configs:\n"]
    for variant in ("production", "canary"):
        cfg.append(f"  - job_name: {variant}\n    metrics_path: /{variant}/metrics\n"
                   f"    static_configs:\n      - targets: ['127.0.0.1:{expo.port}']\n"
                   f"        labels: {{variant: {variant}}}\n")
    prom.config.write_text("".join(cfg))  # one job per variant: a path tells them apart
    prom.start()
    try:
        prom.wait_for_series("feedback_accuracy", 3)
        windows = WindowReader(PromClient(prom.url), 30).read()
    finally:
        prom.stop()
        expo.close()
    assert windows["production"].accuracy == OnlineAccuracy(0.9, 0.88, 0.92, 500)
    assert windows["canary"].accuracy == OnlineAccuracy(0.8, 0.75, 0.85, 120)
