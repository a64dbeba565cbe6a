"""The controller's state machine, fed fixed windows (the real-Prometheus runs are in
test_analysis_rollout.py): what it decides, what it tells the actuator, what it does
not touch, and the canary_analysis_* metrics it serves."""

from __future__ import annotations

import json
import math
import threading
import time

import pytest
import requests

from gourmetgram.canary.analysis import Histogram, VariantWindow
from gourmetgram.canary.analysis_settings import AnalysisSettings
from gourmetgram.canary.judge import CHECKS
from gourmetgram.canary.promclient import PrometheusUnavailable
from gourmetgram.canary.rollout import (
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
    request_start,
)


def window(n: int, errors: int = 0, confidence: float = 0.85, cls: str = "Bread") -> VariantWindow:
    lat = Histogram.from_buckets({0.05: n * 0.6, 0.1: n * 0.97, math.inf: n}, n * 0.05, n)
    lo = round(confidence - 0.05, 1)
    conf = Histogram.from_buckets(
        {round(0.1 * i, 1): (n if round(0.1 * i, 1) >= lo + 0.1 else 0.0) for i in range(11)}
        | {math.inf: n}, n * confidence, n)
    return VariantWindow(requests=n, errors=errors, latency=lat, confidence=conf,
                         classes={cls: n * 0.5, "Soup": n * 0.5}, up=1.0)


class Reader:
    """Hands out the windows the test sets; raises while ``down``."""

    def __init__(self, canary: VariantWindow, production: VariantWindow):
        self.windows = {"canary": canary, "production": production}
        self.down = False

    def read(self, at=None):
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
    # Fixed windows do not follow the weight, so the sample-ratio check (tested on its own
    # in test_analysis_availability.py) is left out here.
    checks = tuple(c for c in CHECKS if c != "sample_ratio")
    return AnalysisSettings(interval_s=0.01, state_dir=tmp_path / "state", failed_checks_threshold=2,
                            metrics_port=0, checks=checks)


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


def test_a_canary_judged_bad_is_never_advanced_while_its_rollback_fails(settings):
    """The rollback is decided once: a passing window after a failed rollback retries
    the rollback, it never steps the canary up or promotes it."""
    act = Broken(weight=20, n=2)
    reader = Reader(window(400, errors=80), window(4000))
    c = Controller(settings, act, reader=reader)
    assert [c.step().action for _ in range(2)] == [HOLD, HOLD]  # 1 of 2; rollback fails
    reader.windows["canary"] = window(400)  # now it looks healthy
    assert c.step().action == HOLD and "rollback failed" in c.history[-1].reason
    assert c.step().action == ROLLBACK and act.w == 0
    assert act.calls == [("rollback",)]


def test_rollout_state_survives_a_controller_restart(settings):
    act = Recorder(weight=20)
    reader = Reader(window(400, errors=80), window(4000))
    first = Controller(settings, act, reader=reader)
    assert first.step().action == HOLD and first.failed == 1
    state = json.loads((settings.state_dir / "rollout.json").read_text())
    assert state["phase"] == "running" and state["failed"] == 1 and state["analyses"] == 1
    second = Controller(settings, act, reader=reader)  # the unit restarted
    assert second.failed == 1 and second.state.analyses == 1
    assert second.step().action == ROLLBACK and act.calls == [("rollback",)]
    assert json.loads((settings.state_dir / "rollout.json").read_text())["phase"] == "idle"


def test_a_decided_rollback_is_retried_after_a_restart(settings):
    act = Broken(weight=20, n=2)
    reader = Reader(window(400, errors=80), window(4000))
    first = Controller(settings, act, reader=reader)
    first.step()
    first.step()  # rollback decided, fails
    assert json.loads((settings.state_dir / "rollout.json").read_text())["phase"] == "rolling-back"
    reader.windows["canary"] = window(400)
    second = Controller(settings, act, reader=reader)
    assert second.step().action == HOLD  # second failure of the routing change
    assert second.step().action == ROLLBACK and act.w == 0


def test_progress_deadline_rolls_back_a_rollout_stuck_on_hold(settings):
    s = settings.model_copy(update={"progress_deadline_s": 0.3})
    act = Recorder(weight=10)
    c = Controller(s, act, reader=Reader(window(30), window(4000)))
    first = c.step()
    assert first.action == HOLD and first.reason.startswith("inconclusive")
    time.sleep(0.4)
    d = c.step()
    assert d.action == ROLLBACK and act.calls == [("rollback",)]
    assert "past the progress deadline of 0.3 s" in d.reason and "inconclusive" in d.reason


def _history(path, *entries):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        for e in entries:
            f.write(json.dumps(e) + "\n")


def test_always_on_controller_idles_then_rolls_out_a_shipped_canary(settings, tmp_path):
    """Idle (phase metric idle, metrics served) until a ship shows in the routing
    history; an old ship from before its first start is not rolled out by surprise."""
    history = tmp_path / "canary-history.jsonl"
    _history(history, {"time": time.time() - 100, "action": "ship", "versions": {"canary": "old"}})
    m = AnalysisMetrics()
    port = m.serve("127.0.0.1", 0)
    act = Recorder(weight=0)
    c = Controller(settings, act, reader=Reader(window(400), window(4000)), metrics=m)
    stop = threading.Event()
    t = threading.Thread(target=c.serve, args=(stop, history), kwargs={"poll_s": 0.05})
    t.start()
    try:
        time.sleep(0.5)
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'canary_analysis_phase{phase="idle"} 1.0' in text and act.calls == []
        _history(history, {"time": time.time(), "action": "ship", "versions": {"canary": "v9"}})
        deadline = time.monotonic() + 20
        while ("promote",) not in act.calls and time.monotonic() < deadline:
            time.sleep(0.05)
        assert act.calls[-1] == ("promote",), act.calls
        time.sleep(0.3)
        assert c.state.phase == "idle" and act.calls.count(("promote",)) == 1  # idle again
        request_start(settings, "tester")  # `gourmetgram canary start`
        deadline = time.monotonic() + 20
        while act.calls.count(("promote",)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert act.calls.count(("promote",)) == 2
        assert c.history[-1].action == PROMOTE
    finally:
        stop.set()
        t.join(10)
        m.close()
    assert not t.is_alive()
