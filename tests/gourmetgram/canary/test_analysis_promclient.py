"""The Prometheus reader against a real, empty Prometheus: no data is inconclusive
(never a failure), a bad selector is a query error, a stopped Prometheus is
"unavailable" (the controller's pause)."""

from __future__ import annotations

import pytest

from gourmetgram.canary.analysis import FAIL
from gourmetgram.canary.analysis_settings import AnalysisSettings
from gourmetgram.canary.judge import judge
from gourmetgram.canary.promclient import (
    PromClient,
    PrometheusQueryError,
    PrometheusUnavailable,
    WindowReader,
)
from tests.gourmetgram.canary.analysis_rig import PrometheusServer
from tests.procs import free_port


@pytest.fixture
def prom(tmp_path):
    # One target nobody listens on: Prometheus runs, scrapes fail, no API series exist.
    p = PrometheusServer(tmp_path, {"production": f"127.0.0.1:{free_port()}"}).start()
    yield p
    p.stop()


def test_empty_prometheus_gives_inconclusive_checks(prom, tmp_path):
    s = AnalysisSettings(prometheus_url=prom.url, state_dir=tmp_path)
    windows = WindowReader(PromClient(prom.url), 30, s.selector).read()
    assert windows["canary"].requests == 0 and windows["canary"].latency is None
    results = {r.check: r.verdict for r in judge(windows["canary"], windows["production"], s)}
    assert results == {"error_rate": "inconclusive", "latency": "inconclusive",
                       "confidence": "inconclusive", "class_mix": "inconclusive",
                       "drift": "skipped", "up": "inconclusive", "restarts": "skipped",
                       "upstream_errors": "skipped", "sample_ratio": "skipped"}
    assert FAIL not in results.values()


def test_up_series_is_read(prom):
    prom.wait_for_series('up{job="food11"}', 1)
    (labels, value), = PromClient(prom.url).query('up{job="food11"}')
    assert labels["variant"] == "production" and value == 0.0


def test_bad_selector_is_a_query_error(prom):
    reader = WindowReader(PromClient(prom.url), 30, 'job="food11",,variant=~"(')
    with pytest.raises(PrometheusQueryError):
        reader.read()


def test_stopped_prometheus_is_unavailable(prom):
    client = PromClient(prom.url, timeout=2)
    prom.stop()
    with pytest.raises(PrometheusUnavailable, match="unreachable"):
        client.query("up")
