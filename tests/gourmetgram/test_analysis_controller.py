"""The controller's state machine, fed fixed windows (the real-Prometheus runs are in
test_analysis_rollout.py): what it decides, what it tells the actuator, what it does
not touch, and the canary_analysis_* metrics it serves."""

from __future__ import annotations

import json
import math

import pytest
import requests

from gourmetgram.analysis import Histogram, VariantWindow
from gourmetgram.analysis_settings import AnalysisSettings
from gourmetgram.promclient import PrometheusUnavailable
from gourmetgram.rollout import (
    ADVANCE,
    HOLD,
    PAUSE,
    PROMOTE,
    ROLLBACK,
    STOPPED,
    WAIT,
    AnalysisMetrics,
    Controller,
    approve,
)


def window(n: int, errors: int = 0, confidence: float = 0.85, cls: str = "Bread") -> VariantWindow:
    lat = Histogram.from_buckets({0.05: n * 0.6, 0.1: n * 0.97, math.inf: n}, n * 0.05, n)
    lo = round(confidence - 0.05, 1)
    conf = Histogram.from_buckets(
        {round(0.1 * i, 1): (n if round(0.1 * i, 1) >= lo + 0.1 else 0.0) for i in range(11)}
        | {math.inf: n}, n * confidence, n)
    return VariantWindow(requests=n, errors=errors, latency=lat, confidence=conf,
                         classes={cls: n * 0.5, "Soup": n * 0.5})


class Reader:
    """Hands out the windows the test sets; raises while ``down``."""

    def __init__(self, canary: VariantWindow, production: VariantWindow):
        self.windows = {"canary": canary, "production": production}
        self.down = False

    def read(self):
        if self.down:
            raise PrometheusUnavailable("connection refused")
        return self.windows


class Recorder:
    def __init__(self, weight: int = 0):
        self.w = weight
        self.calls: list[tuple] = []

    def weight(self) -> int:
        return self.w

    def set_weight(self, weight: int, reason: str) -> None:
        self.calls.append(("set_weight", weight))
        self.w = weight

    def promote(self, reason: str) -> None:
        self.calls.append(("promote",))
        self.w = 0

    def rollback(self, reason: str) -> None:
        self.calls.append(("rollback",))
        self.w = 0


@pytest.fixture
def settings(tmp_path):
    return AnalysisSettings(interval_s=0.01, state_dir=tmp_path / "state", failed_checks_threshold=2,
                            metrics_port=0)


def run(settings, reader, act, steps=50):
    c = Controller(settings, act, reader=reader)
    c.run(max_steps=steps)
    return c


def test_good_canary_steps_up_and_is_promoted(settings):
    act = Recorder()
    c = run(settings, Reader(window(400), window(4000)), act)
    assert act.calls == [("set_weight", w) for w in (10, 20, 30, 40, 50)] + [("promote",)]
    assert [d.action for d in c.history] == [ADVANCE] * 5 + [PROMOTE]
    log = [json.loads(x) for x in (settings.state_dir / "decisions.jsonl").read_text().splitlines()]
    assert log[-1]["action"] == PROMOTE and {ch["verdict"] for ch in log[-1]["checks"]} <= {
        "pass", "skipped"}


def test_errors_hold_then_roll_back_at_threshold(settings):
    act = Recorder(weight=20)
    c = run(settings, Reader(window(400, errors=80), window(4000)), act)
    assert [d.action for d in c.history] == [HOLD, ROLLBACK]
    assert act.calls == [("rollback",)]
    assert "error_rate" in c.history[-1].reason


def test_low_traffic_only_holds(settings):
    act = Recorder(weight=10)
    c = run(settings, Reader(window(30, errors=30, confidence=0.15, cls="Egg"), window(4000)), act, 6)
    assert [d.action for d in c.history] == [HOLD] * 6
    assert act.calls == [] and act.w == 10
    assert all("inconclusive" in d.reason for d in c.history)


def test_prometheus_down_pauses_without_touching_weights(settings):
    act = Recorder(weight=20)
    reader = Reader(window(400), window(4000))
    reader.down = True
    c = Controller(settings, act, reader=reader)
    for _ in range(3):
        assert c.step().action == PAUSE
    assert act.calls == [] and act.w == 20 and c.failed == 0
    reader.down = False
    assert c.step().action == ADVANCE and act.w == 30


def test_manual_gate_waits_for_approval(settings):
    s = settings.model_copy(update={"manual_gate": True})
    act = Recorder(weight=50)
    c = Controller(s, act, reader=Reader(window(400), window(4000)))
    assert c.step().action == WAIT
    assert c.step().action == WAIT and act.calls == []
    approve(s, "tester")
    assert c.step().action == PROMOTE and act.calls == [("promote",)]
    assert not (s.state_dir / "approved").exists()  # an approval serves one promotion


def test_stale_approval_is_cleared_when_a_run_starts(settings):
    s = settings.model_copy(update={"manual_gate": True})
    approve(s)
    act = Recorder(weight=50)
    c = Controller(s, act, reader=Reader(window(400), window(4000)))
    c.run(max_steps=3)
    assert [d.action for d in c.history] == [WAIT] * 3 and act.calls == []


def test_manual_weight_zero_stops_the_controller(settings):
    act = Recorder(weight=20)
    reader = Reader(window(400), window(4000))
    c = Controller(settings, act, reader=reader)
    assert c.step().action == ADVANCE
    act.w = 0  # a person ran `gourmetgram canary rollback`
    assert c.step().action == STOPPED and c.finished
    assert act.calls == [("set_weight", 30)]


def test_metrics_endpoint_reports_decisions(settings):
    m = AnalysisMetrics()
    port = m.serve("127.0.0.1", 0)
    try:
        act = Recorder(weight=10)
        c = Controller(settings, act, reader=Reader(window(400, errors=80), window(4000)), metrics=m)
        c.step()
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        m.close()
    assert 'canary_analysis_last_decision{decision="hold"} 1.0' in text
    assert 'canary_analysis_check_verdict{check="error_rate",verdict="fail"} 1.0' in text
    assert 'canary_analysis_check_verdict{check="latency",verdict="pass"} 1.0' in text
    assert "canary_analysis_weight 10.0" in text
    assert "canary_analysis_failed_checks 1.0" in text
    assert 'canary_analysis_check_value{check="error_rate",variant="canary"} 0.2' in text


class Broken(Recorder):
    """An actuator whose routing change fails the first ``n`` times (nginx -t refusing)."""

    def __init__(self, weight: int, n: int):
        super().__init__(weight)
        self.n = n

    def rollback(self, reason: str) -> None:
        if self.n:
            self.n -= 1
            raise RuntimeError("nginx -t failed")
        super().rollback(reason)


def test_failed_rollback_is_retried_at_the_next_analysis(settings):
    act = Broken(weight=20, n=1)
    c = Controller(settings, act, reader=Reader(window(400, errors=80), window(4000)))
    c.run(max_steps=5)
    assert [d.action for d in c.history] == [HOLD, HOLD, ROLLBACK]
    assert "rollback failed" in c.history[1].reason and act.calls == [("rollback",)]


class Unreadable(Recorder):
    def weight(self) -> int:
        raise OSError("stack.json: permission denied")


def test_unreadable_canary_state_pauses(settings):
    act = Unreadable(weight=20)
    c = Controller(settings, act, reader=Reader(window(400, errors=80), window(4000)))
    d = c.step()
    assert d.action == PAUSE and "cannot read the canary weight" in d.reason
    assert act.calls == [] and c.failed == 0
