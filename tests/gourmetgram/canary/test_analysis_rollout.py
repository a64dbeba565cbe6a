"""The controller end to end: real API instances (gunicorn + uvicorn, real models),
Debian's Prometheus scraping them every second, real Nginx splitting the traffic,
a threaded client driving load through Nginx, short intervals and windows.

Test settings relax the latency rule (tolerance 100 %, +0.5 s): this 2-core machine
runs other test suites at the same time, so one instance can be slower for reasons
unrelated to its model; the latency rule itself is tested in test_analysis_stats.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest
import torch
from torch import nn

from gourmetgram.canary.analysis import FAIL, PASS
from gourmetgram.canary.analysis_settings import AnalysisSettings
from gourmetgram.canary.rollout import ADVANCE, HOLD, PAUSE, PROMOTE, ROLLBACK, Controller
from tests.gourmetgram.canary.analysis_rig import (
    NginxActuator,
    NginxSplit,
    PrometheusServer,
    Traffic,
    image_pool,
)
from tests.procs import ApiServer, child_env

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
def apis(tmp_path_factory, demo_model):
    """Production and the three canaries, started together (their start-up overlaps)."""
    tmp = tmp_path_factory.mktemp("apis")
    from app_api.demo_model import build_architecture
    from app_api.model import build_mobilenet_v2

    torch.manual_seed(0)
    random_model = tmp / "random-mobilenet-v2.pth"
    torch.save(build_mobilenet_v2().state_dict(), random_model)

    archive = torch.load(demo_model, map_location="cpu", weights_only=True)
    net = build_architecture(archive.get("meta", {}))
    net.load_state_dict(archive["state_dict"])
    traced = torch.jit.trace(net.eval(), torch.zeros(1, 3, 224, 224))
    faulty_model = tmp / "faulty.pt"
    torch.jit.script(Faulty(traced, 1.2)).save(str(faulty_model))

    servers = {
        "production": ApiServer(tmp, demo_model, "production"),
        "good": ApiServer(tmp, demo_model, "canary", extra_args=["--model-version", "demo-2"]),
        "random": ApiServer(tmp, random_model, "canary", extra_args=["--model-version", "random-1"]),
        "faulty": ApiServer(tmp, faulty_model, "canary", extra_args=["--model-version", "faulty-1"]),
    }
    try:
        for s in servers.values():
            s.wait_ready(180)
        yield servers
    finally:
        for s in servers.values():
            s.stop()


@pytest.fixture
def rig(tmp_path, apis):
    """``rig(canary_name)`` -> (prometheus, nginx, actuator); all stopped at teardown."""
    started = []

    def make(canary: str):
        prod, can = apis["production"], apis[canary]
        prom = PrometheusServer(tmp_path, {"production": f"127.0.0.1:{prod.port}",
                                           "canary": f"127.0.0.1:{can.port}"})
        started.append(prom)
        prom.start()
        nginx = NginxSplit(tmp_path, f"127.0.0.1:{prod.port}", f"127.0.0.1:{can.port}")
        started.append(nginx)
        nginx.start()
        prom.wait_for_series('up{job="food11"} == 1', 2)
        return prom, nginx, NginxActuator(nginx)

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
        class_mix_min_requests=12, drift_min_requests=12,
        latency_tolerance=1.0, latency_min_increase_s=0.5,
    )
    return AnalysisSettings(**(base | kw))


def show(c: Controller) -> str:
    return "\n".join(d.line() for d in c.history)


def verdicts(decision) -> dict[str, str]:
    return {ch.check: ch.verdict for ch in decision.checks}


def test_good_canary_is_stepped_up_and_promoted_without_failed_requests(rig, traffic, tmp_path):
    prom, nginx, act = rig("good")
    load = traffic(nginx.url, image_pool(), clients=3)
    c = Controller(settings_for(prom, tmp_path), act)
    c.run(max_steps=12)
    print(show(c))
    assert c.history[-1].action == PROMOTE, show(c)
    assert [e[:2] for e in act.events] == [("set_weight", 25), ("set_weight", 50), ("promote", 0)]
    assert not any(FAIL in verdicts(d).values() for d in c.history), show(c)
    promoted = c.history[-1]
    assert verdicts(promoted)["error_rate"] == PASS and verdicts(promoted)["class_mix"] == PASS
    # After promotion the production route serves the canary's model.
    before = load.counts[("canary", 200)]
    deadline = time.monotonic() + 20
    while load.counts[("canary", 200)] < before + 5 and time.monotonic() < deadline:
        time.sleep(0.2)
    load.stop()
    assert load.failures == [], load.failures[:5]
    assert load.counts[("canary", 200)] >= before + 5
    assert load.counts[("production", 200)] > 0


def test_prometheus_down_pauses_and_resumes(rig, traffic, tmp_path):
    prom, nginx, act = rig("good")
    load = traffic(nginx.url, image_pool(), clients=3)
    c = Controller(settings_for(prom, tmp_path), act)
    assert c.step().action == ADVANCE and nginx.weight == 25
    prom.stop()
    reloads = nginx.reloads
    for _ in range(2):
        time.sleep(INTERVAL)
        d = c.step()
        assert d.action == PAUSE, show(c)
        assert "cannot read Prometheus" in d.reason
    assert nginx.weight == 25 and nginx.reloads == reloads and len(act.events) == 1
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
    prom, nginx, act = rig("random")
    s = settings_for(prom, tmp_path)
    load = traffic(nginx.url, image_pool(), clients=3)

    # First, one judgement from the CLI at a fixed 50 %: it reports, it changes nothing.
    nginx.apply(50)
    reloads = nginx.reloads
    time.sleep(11)
    r = subprocess.run(
        [sys.executable, "-m", "gourmetgram", "canary", "analyze", "--json", "--window", "10"],
        capture_output=True, text=True, timeout=60,
        env=child_env(**{f"CANARY_ANALYSIS_{k.upper()}": str(v) for k, v in {
            "prometheus_url": prom.url, "state_dir": tmp_path / "cli-state",
            "confidence_min_requests": 15, "class_mix_min_requests": 15,
            "error_rate_min_requests": 15, "latency_min_requests": 15,
            "latency_tolerance": 1.0, "latency_min_increase_s": 0.5}.items()}),
    )
    assert r.returncode == 1, r.stdout + r.stderr
    out = {ch["check"]: ch for ch in json.loads(r.stdout)["checks"]}
    assert out["confidence"]["verdict"] == FAIL and out["class_mix"]["verdict"] == FAIL
    assert out["error_rate"]["verdict"] == PASS
    assert nginx.weight == 50 and nginx.reloads == reloads and act.events == []

    nginx.apply(0)
    c = Controller(s, act)
    c.run(max_steps=12)
    print(show(c))
    load.stop()
    assert c.history[-1].action == ROLLBACK, show(c)
    assert nginx.weight == 0 and act.events[-1][0] == "rollback"
    failing = [d for d in c.history if FAIL in verdicts(d).values()]
    assert len(failing) == 2
    for d in failing:
        v = verdicts(d)
        assert v["confidence"] == FAIL and v["class_mix"] == FAIL, d.line()
        assert v["error_rate"] == PASS, d.line()  # HTTP alone looks healthy
    assert load.failures == []


def test_canary_with_errors_is_rolled_back(rig, traffic, tmp_path):
    prom, nginx, act = rig("faulty")
    load = traffic(nginx.url, image_pool(bright_every=3), clients=3)
    c = Controller(settings_for(prom, tmp_path, checks=("error_rate", "latency")), act)
    c.run(max_steps=12)
    print(show(c))
    load.stop()
    assert c.history[-1].action == ROLLBACK, show(c)
    assert "error_rate" in c.history[-1].reason
    assert nginx.weight == 0
    assert load.failures and all(f.startswith("500") for f in load.failures), load.failures[:10]


def test_low_traffic_is_inconclusive_and_never_rolled_back(rig, traffic, tmp_path):
    prom, nginx, act = rig("faulty")
    load = traffic(nginx.url, image_pool(bright_every=2), clients=1, pause_s=0.8)
    c = Controller(settings_for(prom, tmp_path), act)
    c.run(max_steps=6)
    print(show(c))
    load.stop()
    actions = [d.action for d in c.history]
    assert actions == [ADVANCE] + [HOLD] * 5, show(c)
    assert all(d.reason.startswith("inconclusive") for d in c.history[1:]), show(c)
    assert nginx.weight == 25 and [e[0] for e in act.events] == ["set_weight"]
    assert any(f.startswith("500") for f in load.failures)  # the canary did fail requests
