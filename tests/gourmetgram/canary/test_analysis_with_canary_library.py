"""The controller driving the real canary routing library (gourmetgram.canary.routing) on a
real stack: the library's Nginx site, its reloads, and its promotion, which restarts
the production API onto the canary's model. Runs where the routing library and its
test stack (tests/canary_stack.py) are present; skipped otherwise."""

from __future__ import annotations

import pytest

canary = pytest.importorskip("gourmetgram.canary.routing")
canary_stack = pytest.importorskip("tests.canary_stack")

from gourmetgram.canary.rollout import PROMOTE, CanaryLibraryActuator, Controller  # noqa: E402
from tests.gourmetgram.canary.analysis_rig import PrometheusServer, Traffic, image_pool  # noqa: E402
from tests.gourmetgram.canary.test_analysis_rollout import settings_for, show  # noqa: E402

pytestmark = pytest.mark.slow


def test_controller_promotes_through_the_canary_library(tmp_path, demo_model):
    stack = canary_stack.CanaryStack(tmp_path / "stack", demo_model)
    prom = load = None
    try:
        stack.start()
        ports = stack.stack.api_ports
        prom = PrometheusServer(tmp_path, {v: f"127.0.0.1:{p}" for v, p in ports.items()}).start()
        prom.wait_for_series('up{job="food11"} == 1', 2)
        load = Traffic(stack.url, image_pool(), clients=3).start()
        act = CanaryLibraryActuator(layout=stack.layout, services=stack.services)
        c = Controller(settings_for(prom, tmp_path), act)
        c.run(max_steps=12)
        load.stop()
        assert c.history[-1].action == PROMOTE, show(c)
        st = canary.status(layout=stack.layout)
        assert st["canary_weight"] == 0
        assert st["variants"]["production"]["model_version"] == "v2"
        assert load.failures == [], load.failures[:5]
        history = (stack.layout.history_file).read_text()
        assert "canary analysis: all checks passed" in history
    finally:
        if load:
            load.stop()
        if prom:
            prom.stop()
        stack.stop()
