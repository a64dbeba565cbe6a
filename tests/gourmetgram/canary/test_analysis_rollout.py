"""The controller end to end on the real canary stack: real API instances (gunicorn +
uvicorn, real models), the product's Nginx site moved by the real routing library
(gourmetgram.canary.routing, as `gourmetgram canary set|promote|rollback` do), Debian's
Prometheus scraping the APIs every second, a threaded client driving load through
Nginx, short intervals and windows.

Test settings relax the latency rule (tolerance 100 %, +0.5 s): this 2-core machine
runs other test suites at the same time, so one instance can be slower for reasons
unrelated to its model; the latency rule itself is tested in test_analysis_stats.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from gourmetgram.canary import routing as canary
from gourmetgram.canary.analysis import FAIL, PASS
from gourmetgram.canary.analysis_settings import AnalysisSettings
from gourmetgram.canary.rollout import (
    ADVANCE,
    HOLD,
    PAUSE,
    PROMOTE,
    ROLLBACK,
    AnalysisMetrics,
    CanaryLibraryActuator,
    Controller,
    request_start,
)
from gourmetgram.commands.analysis import upstreams_of
from tests.canary_faults import random_weights_model
from tests.canary_stack import CanaryStack
from tests.gourmetgram.canary.analysis_rig import (
    ControllerRig,
    CrashLoop,
    PrometheusServer,
    Traffic,
    image_pool,
)
from tests.procs import Proc, child_env, free_port

pytestmark = pytest.mark.slow
INTERVAL = 4.0


class Faulty(nn.Module):
    """The demo network, failing on near-white inputs: an instance that answers most
    requests well and some with HTTP 500."""

    def __init__(self, inner: nn.Module, threshold: float):
        super().__init__()
        self.inner = inner
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.mean() > self.threshold):
            raise RuntimeError("injected fault: input too bright")
        return self.inner(x)


@pytest.fixture(scope="module")
def models(tmp_path_factory, demo_model) -> dict[str, Path]:
    """Model files for the canary: the demo model, random weights, and the demo model
    failing on near-white inputs."""
    tmp = tmp_path_factory.mktemp("models")
    from app_api.demo_model import build_architecture

    archive = torch.load(demo_model, map_location="cpu", weights_only=True)
    net = build_architecture(archive.get("meta", {}))
    net.load_state_dict(archive["state_dict"])
    traced = torch.jit.trace(net.eval(), torch.zeros(1, 3, 224, 224))
    faulty_model = tmp / "faulty.pt"
    torch.jit.script(Faulty(traced, 1.2)).save(str(faulty_model))
    return {"good": demo_model, "random": random_weights_model(tmp / "random-mobilenet-v2.pth"),
            "faulty": faulty_model}


@pytest.fixture
def rig(tmp_path, models):
    """``rig(canary_name)`` -> (stack, prometheus, actuator): the canary stack of
    tests/canary_stack.py (real APIs, the product's Nginx site, the routing library)
    with that canary model, mtail, and Prometheus scraping both APIs; stopped at teardown."""
    started = []

    def make(canary: str, jobs: dict[str, str] | None = None, **overrides):
        data = {"models": {"production": {"path": str(models["good"]), "version": "v1"},
                           "canary": {"path": str(models[canary]), "version": f"{canary}-2"}},
                "scrape_interval": "1s", **overrides}
        stack = CanaryStack(tmp_path / "stack", models["good"], **data)
        rig = ControllerRig(tmp_path, stack, jobs)
        started.append(rig)
        rig.start()
        return stack, rig.prom, CanaryLibraryActuator(layout=stack.layout, services=stack.services)

    yield make
    for p in reversed(started):
        p.stop()


@pytest.fixture
def traffic():
    running = []

    def start(url, images, **kw):
        t = Traffic(url, images, **kw).start()
        running.append(t)
        return t

    yield start
    for t in running:
        t.stop()


def settings_for(prom: PrometheusServer, tmp_path, **kw) -> AnalysisSettings:
    base = dict(
        prometheus_url=prom.url, interval_s=INTERVAL, window_s=12, step_weight=25, max_weight=50,
        failed_checks_threshold=2, state_dir=tmp_path / "state", metrics_port=0,
        error_rate_min_requests=12, latency_min_requests=12, confidence_min_requests=12,
        class_mix_min_requests=12, drift_min_requests=12, sample_ratio_min_requests=12,
        upstream_min_requests=12, latency_tolerance=1.0, latency_min_increase_s=0.5,
        scrape_interval_s=1, shadow_intervals=0,
    )
    return AnalysisSettings(**(base | kw))


def controller(stack: CanaryStack, s: AnalysisSettings, act, **kw) -> Controller:
    """The controller as `gourmetgram canary run` builds it (Nginx's upstream addresses
    from the stack data, for the upstream_errors check)."""
    return Controller(s, act, upstreams=upstreams_of(stack.stack), **kw)


def show(c: Controller) -> str:
    return "\n".join(d.line() for d in c.history)


def verdicts(decision) -> dict[str, str]:
    return {ch.check: ch.verdict for ch in decision.checks}


def weight(stack: CanaryStack) -> int:
    return canary.load_state(stack.layout).canary_weight


def changes(stack: CanaryStack) -> list[tuple[str, int]]:
    """The routing library's history: (action, weight) per change."""
    lines = stack.layout.history_file.read_text().splitlines()
    return [(e["action"], e["canary_weight"]) for e in map(json.loads, lines)]


def test_good_canary_is_stepped_up_and_promoted_without_failed_requests(rig, traffic, tmp_path):
    stack, prom, act = rig("good")
    load = traffic(stack.url, image_pool(), clients=3)
    c = controller(stack, settings_for(prom, tmp_path), act)
    c.run(max_steps=12)
    print(show(c))
    assert c.history[-1].action == PROMOTE, show(c)
    assert changes(stack) == [("set", 25), ("set", 50), ("promote-drain", 100), ("promote", 0)]
    assert not any(FAIL in verdicts(d).values() for d in c.history), show(c)
    promoted = c.history[-1]
    assert verdicts(promoted)["error_rate"] == PASS and verdicts(promoted)["class_mix"] == PASS
    # After promotion production serves the canary's model, restarted onto it.
    st = canary.status(layout=stack.layout)
    assert st["canary_weight"] == 0
    assert st["variants"]["production"]["served_version"] == "good-2"
    assert "canary analysis: all checks passed" in stack.layout.history_file.read_text()
    load.stop()
    assert load.failures == [], load.failures[:5]
    assert load.counts[("canary", 200)] > 0 and load.counts[("production", 200)] > 0


def test_prometheus_down_pauses_and_resumes(rig, traffic, tmp_path):
    stack, prom, act = rig("good")
    load = traffic(stack.url, image_pool(), clients=3)
    c = Controller(settings_for(prom, tmp_path), act)
    assert c.step().action == ADVANCE and weight(stack) == 25
    prom.stop()
    reloads = stack.services.calls.count("reload")
    for _ in range(2):
        time.sleep(INTERVAL)
        d = c.step()
        assert d.action == PAUSE, show(c)
        assert "cannot read Prometheus" in d.reason
    assert weight(stack) == 25 and stack.services.calls.count("reload") == reloads
    prom.start()
    stop = threading.Event()
    c.run(stop, max_steps=12)
    print(show(c))
    load.stop()
    actions = [d.action for d in c.history]
    assert actions[-1] == PROMOTE, show(c)
    assert ADVANCE in actions[3:], show(c)  # it went on stepping after Prometheus returned
    assert load.failures == []


def test_random_weights_canary_is_rolled_back_though_http_looks_healthy(rig, traffic, tmp_path):
    stack, prom, act = rig("random")
    s = settings_for(prom, tmp_path)
    load = traffic(stack.url, image_pool(), clients=3)

    # First, one judgement from the CLI at a fixed 50 %: it reports, it changes nothing.
    stack.set_weight(50)
    reloads = stack.services.calls.count("reload")
    time.sleep(11)
    r = subprocess.run(
        [sys.executable, "-m", "gourmetgram", "canary", "analyze", "--json", "--window", "10"],
        capture_output=True, text=True, timeout=60,
        env=child_env(**stack.cli_env(), **{f"CANARY_ANALYSIS_{k.upper()}": str(v) for k, v in {
            "prometheus_url": prom.url, "state_dir": tmp_path / "cli-state",
            "confidence_min_requests": 15, "class_mix_min_requests": 15,
            "error_rate_min_requests": 15, "latency_min_requests": 15,
            "latency_tolerance": 1.0, "latency_min_increase_s": 0.5}.items()}),
    )
    assert r.returncode == 1, r.stdout + r.stderr
    out = {ch["check"]: ch for ch in json.loads(r.stdout)["checks"]}
    assert out["confidence"]["verdict"] == FAIL and out["class_mix"]["verdict"] == FAIL
    assert out["error_rate"]["verdict"] == PASS
    assert weight(stack) == 50 and stack.services.calls.count("reload") == reloads

    stack.set_weight(0)
    c = Controller(s, act)
    c.run(max_steps=12)
    print(show(c))
    load.stop()
    assert c.history[-1].action == ROLLBACK, show(c)
    assert weight(stack) == 0 and changes(stack)[-1] == ("rollback", 0)
    failing = [d for d in c.history if FAIL in verdicts(d).values()]
    assert len(failing) == 2
    for d in failing:
        v = verdicts(d)
        assert v["confidence"] == FAIL and v["class_mix"] == FAIL, d.line()
        assert v["error_rate"] == PASS, d.line()  # HTTP alone looks healthy
    assert load.failures == []


def test_canary_with_errors_is_rolled_back(rig, traffic, tmp_path):
    stack, prom, act = rig("faulty")
    load = traffic(stack.url, image_pool(bright_every=3), clients=3)
    c = Controller(settings_for(prom, tmp_path, checks=("error_rate", "latency")), act)
    c.run(max_steps=12)
    print(show(c))
    load.stop()
    assert c.history[-1].action == ROLLBACK, show(c)
    assert "error_rate" in c.history[-1].reason
    assert weight(stack) == 0
    assert load.failures and all(f.startswith("500") for f in load.failures), load.failures[:10]


def test_low_traffic_is_inconclusive_and_never_rolled_back(rig, traffic, tmp_path):
    stack, prom, act = rig("faulty")
    load = traffic(stack.url, image_pool(bright_every=2), clients=1, pause_s=0.8)
    c = Controller(settings_for(prom, tmp_path), act)
    c.run(max_steps=6)
    print(show(c))
    load.stop()
    actions = [d.action for d in c.history]
    assert actions == [ADVANCE] + [HOLD] * 5, show(c)
    assert all(d.reason.startswith("inconclusive") for d in c.history[1:]), show(c)
    assert weight(stack) == 25 and changes(stack) == [("set", 25)]
    assert any(f.startswith("500") for f in load.failures)  # the canary did fail requests


def fast(prom, tmp_path, **kw) -> AnalysisSettings:
    """Window = interval = 4 scrape intervals: the shortest the controller accepts."""
    return settings_for(prom, tmp_path, window_s=INTERVAL, **kw)


def rolled_back_within(c: Controller, since: float, intervals: int) -> float:
    rollback = next(d for d in c.history if d.action == ROLLBACK)
    took = rollback.at - since
    assert took <= intervals * INTERVAL, f"rolled back after {took:.1f} s\n{show(c)}"
    return took


def test_crash_looping_canary_is_rolled_back_within_3_intervals_without_failed_requests(
        rig, traffic, tmp_path):
    """It records no 5xx (it is dead most of the time; Nginx retries its requests on
    production): the model checks see too few requests, `up` and the share see it."""
    stack, prom, act = rig("good")
    load = traffic(stack.url, image_pool(), clients=3)
    c = controller(stack, fast(prom, tmp_path), act)
    assert c.step().action == ADVANCE and weight(stack) == 25
    crashing = CrashLoop(stack).start()
    since = time.time()
    try:
        c.run(max_steps=6)
    finally:
        crashing.stop()
    print(show(c))
    load.stop()
    took = rolled_back_within(c, since, 3)
    print(f"crash loop: rolled back {took:.1f} s after the first crash, {crashing.kills} kills")
    assert weight(stack) == 0 and changes(stack)[-1] == ("rollback", 0)
    failed = {ch.check for d in c.history for ch in d.checks if ch.verdict == FAIL}
    assert "up" in failed, show(c)
    assert load.failures == [], load.failures[:5]


def test_hanging_canary_is_rolled_back_within_3_intervals_without_failed_requests(
        rig, traffic, tmp_path):
    """Frozen (SIGSTOP): connections are accepted, nothing answers. Nginx's read timeout
    (2 s here) retries on production; the scrape times out; mtail counts the timeouts."""
    stack, prom, act = rig("good", api_timeout_seconds=2)
    load = traffic(stack.url, image_pool(), clients=3)
    c = controller(stack, fast(prom, tmp_path), act)
    assert c.step().action == ADVANCE and weight(stack) == 25
    canary_pid = stack.apis["canary"].proc.pid
    os.killpg(canary_pid, signal.SIGSTOP)
    since = time.time()
    try:
        c.run(max_steps=6)
    finally:
        os.killpg(canary_pid, signal.SIGCONT)
    print(show(c))
    load.stop()
    took = rolled_back_within(c, since, 3)
    print(f"hang: rolled back {took:.1f} s after the canary froze")
    assert weight(stack) == 0
    failed = {ch.check for d in c.history for ch in d.checks if ch.verdict == FAIL}
    assert failed & {"up", "upstream_errors", "sample_ratio"}, show(c)
    assert load.failures == [], load.failures[:5]


def test_always_on_controller_is_scraped_idle_and_rolls_out_on_start(rig, traffic, tmp_path):
    """The unit's loop on the real stack: its metrics target is up while idle (a fresh
    deploy), `canary start` begins a rollout, a restart mid-rollout resumes it, and
    the canary is promoted."""
    metrics_port = free_port()
    stack, prom, act = rig("good", jobs={"canary-analysis": f"127.0.0.1:{metrics_port}"})
    s = settings_for(prom, tmp_path, metrics_port=metrics_port)
    load = traffic(stack.url, image_pool(), clients=3)

    def serve():
        m = AnalysisMetrics()
        m.serve("127.0.0.1", metrics_port)
        c = controller(stack, s, act, metrics=m)
        stop = threading.Event()
        t = threading.Thread(target=c.serve, args=(stop, stack.layout.history_file),
                             kwargs={"poll_s": 0.5}, daemon=True)
        t.start()
        return c, m, stop, t

    c, m, stop, t = serve()
    try:
        prom.wait_for_series('up{job="canary-analysis"} == 1', 1)
        prom.wait_for_series('canary_analysis_phase{phase="idle"} == 1', 1)
        assert weight(stack) == 0 and c.history == []
        request_start(s, "test")
        deadline = time.monotonic() + 60
        while c.state.steps < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert weight(stack) == 25
    finally:
        stop.set()
        t.join(30)
        m.close()
    assert json.loads((s.state_dir / "rollout.json").read_text())["phase"] == "running"
    c, m, stop, t = serve()  # the unit restarted: the rollout goes on from 25 %
    try:
        deadline = time.monotonic() + 120
        while not any(d.action == PROMOTE for d in c.history) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        stop.set()
        t.join(60)
        m.close()
    print(show(c))
    load.stop()
    assert c.history[-1].action == PROMOTE, show(c)
    assert c.history[0].weight_before == 25, show(c)  # resumed at 25 %, not from 0
    assert [d.action for d in c.history].count(ADVANCE) == 1, show(c)  # 25 -> 50
    assert changes(stack)[-1] == ("promote", 0) and c.state.phase == "idle"
    assert load.failures == [], load.failures[:5]


def test_canary_run_command_serves_its_metrics_while_idle(rig, tmp_path):
    """`gourmetgram canary run` as the unit runs it, with the deployed settings file:
    idle, and its scrape target up, before any canary is shipped."""
    metrics_port = free_port()
    stack, prom, _ = rig("good", jobs={"canary-analysis": f"127.0.0.1:{metrics_port}"})
    stack.layout.analysis_env.write_text(
        f"CANARY_ANALYSIS_PROMETHEUS_URL={prom.url}\nCANARY_ANALYSIS_METRICS_HOST=127.0.0.1\n"
        f"CANARY_ANALYSIS_METRICS_PORT={metrics_port}\n"
        f"CANARY_ANALYSIS_STATE_DIR={tmp_path / 'cli-state'}\nCANARY_ANALYSIS_INTERVAL_S=4\n")
    proc = Proc([sys.executable, "-m", "gourmetgram", "canary", "run"], tmp_path / "run.log",
                env=child_env(**stack.cli_env()))
    try:
        prom.wait_for_series('up{job="canary-analysis"} == 1', 1)
        prom.wait_for_series('canary_analysis_phase{phase="idle"} == 1', 1)
        assert weight(stack) == 0
    finally:
        proc.stop()
    assert "idle until a canary is shipped" in proc.log_path.read_text()
