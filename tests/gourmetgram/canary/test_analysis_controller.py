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
    SHADOW,
    STOPPED,
    WAIT,
    AnalysisMetrics,
    Controller,
    approve,
    request_start,
)
from gourmetgram.canary.shadow import ShadowWindow, join


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

    def shadow(self) -> int:
        return self.mirror

    mirror = 0

    def set_shadow(self, percent: int, reason: str) -> None:
        self.calls.append(("set_shadow", percent))
        self.mirror = percent

    def set_weight(self, weight: int, reason: str) -> None:
        self.calls.append(("set_weight", weight))
        self.w, self.mirror = weight, 0

    def promote(self, reason: str) -> None:
        self.calls.append(("promote",))
        self.w = 0

    def rollback(self, reason: str) -> None:
        self.calls.append(("rollback",))
        self.w, self.mirror = 0, 0


@pytest.fixture
def settings(tmp_path):
    # Fixed windows do not follow the weight, so the sample-ratio check (tested on its own
    # in test_analysis_availability.py) is left out here.
    checks = tuple(c for c in CHECKS if c != "sample_ratio")
    # The shadow stage is off here: its own tests below turn it on.
    return AnalysisSettings(interval_s=0.01, state_dir=tmp_path / "state", failed_checks_threshold=2,
                            metrics_port=0, checks=checks, shadow_intervals=0)


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


def served_metrics(make_controller, steps: int = 1) -> str:
    """The controller's /metrics page, scraped over HTTP after ``steps`` decisions."""
    m = AnalysisMetrics()
    port = m.serve("127.0.0.1", 0)
    try:
        c = make_controller(m)
        for _ in range(steps):
            c.step()
        return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        m.close()


def test_metrics_endpoint_reports_decisions(settings):
    text = served_metrics(lambda m: Controller(
        settings, Recorder(weight=10), reader=Reader(window(400, errors=80), window(4000)),
        metrics=m))
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
        # The promote call is recorded before the controller's thread writes the
        # decision into its history: wait for both.
        while not (act.calls.count(("promote",)) == 2 and c.history[-1].action == PROMOTE) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert act.calls.count(("promote",)) == 2
        assert c.history[-1].action == PROMOTE
    finally:
        stop.set()
        t.join(10)
        m.close()
    assert not t.is_alive()


class Pairs:
    """A shadow reader handing out a fixed window of paired answers."""

    def __init__(self, answered: int, agreed: int, mirrored: int | None = None):
        self.window = pairs(answered, agreed, mirrored)
        self.calls = 0

    def read(self, now, window, since=0.0):
        self.calls += 1
        return self.window


def pairs(answered: int, agreed: int, mirrored: int | None = None) -> ShadowWindow:
    """Production says Bread or Soup; the canary agrees on the first ``agreed``."""
    prod, can = {}, {}
    for i in range(mirrored if mirrored is not None else answered):
        rid = f"{i:032x}"
        cls = "Bread" if i % 2 else "Soup"
        prod[rid] = (100.0, cls, 0.9)
        if i < answered:
            can[rid] = (100.5, cls if i < agreed else "Egg", 0.8)
    return join(prod, can, 0.0, 200.0)


@pytest.fixture
def shadow_settings(settings):
    return settings.model_copy(update={"shadow_intervals": 2, "shadow_percent": 30,
                                       "shadow_min_requests": 100})


def test_shadow_stage_mirrors_then_steps_up_after_passing_analyses(shadow_settings):
    act = Recorder()
    c = Controller(shadow_settings, act, reader=Reader(window(400), window(4000)),
                   shadow=Pairs(400, 392))
    c.run(max_steps=4)
    assert [d.action for d in c.history] == [SHADOW, SHADOW, ADVANCE, ADVANCE], show(c)
    assert act.calls == [("set_shadow", 30), ("set_weight", 10), ("set_weight", 20)]
    d = c.history[2]
    assert "shadow stage passed (2 analyses)" in d.reason and d.weight_after == 10
    checks = {ch.check: ch for ch in d.checks}
    assert checks["shadow_agreement"].verdict == "pass"
    assert checks["shadow_agreement"].canary == pytest.approx(0.98)
    # Checks of what users see are not run while no user is on the canary.
    assert not {"sample_ratio", "upstream_errors", "accuracy"} & set(checks)
    assert c.state.shadow_done and c.state.steps == 2


def test_disagreeing_canary_is_rolled_back_in_the_shadow_stage(shadow_settings):
    act = Recorder()
    c = Controller(shadow_settings, act, reader=Reader(window(400), window(4000)),
                   shadow=Pairs(400, 40))
    c.run(max_steps=6)
    assert [d.action for d in c.history] == [SHADOW, HOLD, ROLLBACK], show(c)
    assert act.calls == [("set_shadow", 30), ("rollback",)] and act.w == 0 and act.mirror == 0
    fail = {ch.check: ch for ch in c.history[-1].checks}["shadow_agreement"]
    assert fail.verdict == "fail" and fail.canary == pytest.approx(0.1)
    assert "Soup: 180 of 200" in fail.reason and fail.details["disagreed_by_class"] == {
        "Soup": 180, "Bread": 180}


def test_shadow_stage_holds_on_too_few_pairs(shadow_settings):
    act = Recorder()
    c = Controller(shadow_settings, act, reader=Reader(window(400), window(4000)),
                   shadow=Pairs(60, 0, mirrored=80))
    c.run(max_steps=4)
    assert [d.action for d in c.history] == [SHADOW, HOLD, HOLD, HOLD], show(c)
    assert act.calls == [("set_shadow", 30)] and c.failed == 0
    assert c.history[-1].reason == "inconclusive: shadow_agreement"
    agreement = {ch.check: ch for ch in c.history[-1].checks}["shadow_agreement"]
    assert "too few mirrored requests answered by both: 60 of 80 mirrored" in agreement.reason


def test_agreement_just_under_the_threshold_is_not_a_failure(shadow_settings):
    """Fail only when clearly below: 74 % of 200 against 75 % is noise."""
    act = Recorder()
    c = Controller(shadow_settings, act, reader=Reader(window(400), window(4000)),
                   shadow=Pairs(200, 148))
    c.run(max_steps=3)
    assert [d.action for d in c.history] == [SHADOW, SHADOW, ADVANCE], show(c)


def test_mirror_turned_off_outside_stops_the_shadow_stage(shadow_settings):
    act, m = Recorder(), AnalysisMetrics()
    c = Controller(shadow_settings, act, reader=Reader(window(400), window(4000)),
                   shadow=Pairs(400, 400), metrics=m)
    assert c.step().action == SHADOW and m.shadow_stage._value.get() == 1
    act.mirror = 0  # a person ran `gourmetgram canary rollback`
    assert c.step().action == STOPPED and c.finished
    assert m.shadow_stage._value.get() == 0


def test_shadow_stage_survives_a_restart(shadow_settings):
    act = Recorder()
    reader, shadow = Reader(window(400), window(4000)), Pairs(400, 400)
    first = Controller(shadow_settings, act, reader=reader, shadow=shadow)
    assert [first.step().action for _ in range(2)] == [SHADOW, SHADOW]
    state = json.loads((shadow_settings.state_dir / "rollout.json").read_text())
    assert state["shadow_since"] > 0 and state["shadow_passed"] == 1
    second = Controller(shadow_settings, act, reader=reader, shadow=shadow)
    assert second.step().action == ADVANCE and act.calls == [("set_shadow", 30), ("set_weight", 10)]


def test_shadow_metrics(shadow_settings):
    text = served_metrics(lambda m: Controller(
        shadow_settings, Recorder(), reader=Reader(window(400), window(4000)),
        shadow=Pairs(400, 40), metrics=m), steps=2)
    assert "canary_shadow_stage 1.0" in text
    assert "canary_shadow_agreement 0.1" in text
    assert "canary_shadow_answered_requests 400.0" in text
    assert 'canary_shadow_class_disagreements{class_name="Soup"} 180.0' in text
    assert 'canary_shadow_class_pairs{class_name="Bread"} 200.0' in text
    assert 'canary_analysis_check_verdict{check="shadow_agreement",verdict="fail"} 1.0' in text


def show(c: Controller) -> str:
    return "\n".join(d.line() for d in c.history)
