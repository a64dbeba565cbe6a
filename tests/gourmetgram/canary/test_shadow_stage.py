"""The shadow stage on the real canary stack (tests/canary_stack.py: real API instances,
the product's Nginx site moved by the real routing library, Debian's Prometheus, mtail,
client threads through Nginx): Nginx's mirror sends a share of production's predictions
to the canary while every user's answer comes from production; the controller's
agreement check passes a canary that agrees and rolls back one that does not (a
random-weights model) before a single user request reaches it."""

from __future__ import annotations

import json
import time

import pytest
import requests

from app_api.shadow import read_records
from gourmetgram.canary import routing as canary
from gourmetgram.canary.analysis import FAIL, PASS
from gourmetgram.canary.rollout import ADVANCE, HOLD, ROLLBACK, SHADOW
from gourmetgram.canary.shadow import ShadowReader
from tests.canary_stack import BODY
from tests.gourmetgram.canary import test_analysis_rollout as rollout
from tests.gourmetgram.canary.analysis_rig import image_pool
from tests.gourmetgram.canary.test_analysis_rollout import (
    changes,
    controller,
    settings_for,
    show,
    verdicts,
)

# The rollout tests' fixtures: the model files, the stack with Prometheus and mtail, traffic.
models, rig, traffic = rollout.models, rollout.rig, rollout.traffic

pytestmark = pytest.mark.slow
MIRROR = "mirror /_gourmetgram_shadow;"


def shadow_percent(stack) -> int:
    return canary.load_state(stack.layout).canary_shadow_percent


def logged(stack, variant: str) -> dict:
    return read_records(stack.layout.shadow_dir(variant))


def wait_total(load, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while load.total() < n:
        assert time.monotonic() < deadline, f"traffic stalled at {load.counts}"
        time.sleep(0.05)


def test_mirror_sends_a_share_to_the_canary_while_users_get_production(rig, traffic, tmp_path):
    stack, _, _ = rig("good")
    site = stack.layout.nginx_site.read_text()
    # Bad values change nothing.
    for bad in (101, -1, True, "10", 12.5):
        with pytest.raises(canary.CanaryError, match="shadow percent"):
            canary.set_shadow(bad, layout=stack.layout, services=stack.services)
    stack.set_weight(10)
    with pytest.raises(canary.CanaryError, match="weight 0 only"):
        canary.set_shadow(20, layout=stack.layout, services=stack.services)
    stack.set_weight(0)
    site = stack.layout.nginx_site.read_text()
    assert MIRROR not in site and shadow_percent(stack) == 0

    canary.set_shadow(50, "test", layout=stack.layout, services=stack.services)
    assert shadow_percent(stack) == 50 and changes(stack)[-1] == ("shadow", 0)
    load = traffic(stack.url, image_pool(), clients=3)
    wait_total(load, 300)
    load.stop()
    time.sleep(2.5)  # the last mirrored copies (read timeout 2 s)
    n = load.total()
    # Every user's answer came from production.
    assert load.failures == [] and set(load.counts) == {("production", 200)}, load.counts
    prod, can = logged(stack, "production"), logged(stack, "canary")
    # 50 % of the requests, picked by request id: binomial, 4 standard deviations.
    sd = (n * 0.25) ** 0.5
    assert abs(len(prod) - n / 2) < 4 * sd, (len(prod), n)
    # The canary got the same requests (same ids), nothing else, and answered them.
    assert set(can) <= set(prod)
    assert len(can) >= 0.95 * len(prod), (len(can), len(prod))
    # Same model: same answers.
    assert all(can[i][1] == prod[i][1] for i in can)

    # Mirror off: nothing more reaches the canary; a client's own X-Shadow-Id is dropped.
    stack.set_weight(0)
    assert shadow_percent(stack) == 0 and MIRROR not in stack.layout.nginx_site.read_text()
    before = len(logged(stack, "canary"))
    with requests.Session() as s:
        for _ in range(20):
            r = s.post(stack.url + "/api/predict", json=BODY, timeout=30,
                       headers={"X-Shadow-Id": "f" * 32})
            assert r.status_code == 200 and r.headers["x-model-variant"] == "production"
    time.sleep(1)
    assert len(logged(stack, "canary")) == before
    assert "f" * 32 not in logged(stack, "production")


def shadow_settings(prom, tmp_path, **kw):
    """Drift is left out: a fresh canary arms its bootstrapped drift reference only after
    200 predictions, which at this traffic holds the stage for a minute (docs/analysis.md)."""
    checks = ("up", "restarts", "error_rate", "latency", "confidence", "class_mix")
    return settings_for(prom, tmp_path, shadow_intervals=2, shadow_percent=50,
                        shadow_min_requests=12, checks=checks, **kw)


def test_agreeing_canary_passes_the_shadow_stage(rig, traffic, tmp_path):
    stack, prom, act = rig("good")
    load = traffic(stack.url, image_pool(), clients=3)
    c = controller(stack, shadow_settings(prom, tmp_path), act, shadow=ShadowReader(stack.layout))
    for _ in range(14):
        d = c.step()
        if d.action == ADVANCE or c.finished:
            break
        time.sleep(4.0)
    load.stop()
    print(show(c))
    actions = [d.action for d in c.history]
    assert actions[0] == SHADOW and actions[-1] == ADVANCE, show(c)
    assert set(actions[1:-1]) <= {SHADOW, HOLD}, show(c)
    assert actions.count(SHADOW) == 2  # mirror on, then one passing analysis of two
    last = verdicts(c.history[-1])
    assert last["shadow_agreement"] == PASS, show(c)
    assert FAIL not in {v for d in c.history for v in verdicts(d).values()}, show(c)
    agreement = next(ch for ch in c.history[-1].checks if ch.check == "shadow_agreement")
    assert agreement.canary == 1.0 and agreement.details["answered"] >= 12
    # The first weight step turned the mirror off in the same routing change.
    assert changes(stack)[-2:] == [("shadow", 0), ("set", 25)]
    assert shadow_percent(stack) == 0 and canary.load_state(stack.layout).canary_weight == 25
    assert load.failures == []


def test_disagreeing_canary_is_rolled_back_in_the_shadow_stage(rig, traffic, tmp_path):
    stack, prom, act = rig("random")
    load = traffic(stack.url, image_pool(), clients=3)
    c = controller(stack, shadow_settings(prom, tmp_path), act, shadow=ShadowReader(stack.layout))
    c.run(max_steps=14)
    load.stop()
    print(show(c))
    assert c.history[-1].action == ROLLBACK, show(c)
    assert {d.action for d in c.history[:-1]} <= {SHADOW, HOLD}, show(c)
    failing = [d for d in c.history if FAIL in verdicts(d).values()]
    assert len(failing) == 2 and verdicts(failing[-1])["shadow_agreement"] == FAIL, show(c)
    agreement = next(ch for ch in failing[-1].checks if ch.check == "shadow_agreement")
    assert agreement.canary < 0.5 and agreement.details["disagreed_by_class"]
    # Not one user request was served by the canary; the mirror is off again.
    assert load.failures == [] and {v for v, _ in load.counts} == {"production"}, load.counts
    assert changes(stack)[-2:] == [("shadow", 0), ("rollback", 0)]
    assert shadow_percent(stack) == 0 and canary.load_state(stack.layout).canary_weight == 0
    log = [json.loads(x) for x in (tmp_path / "state" / "decisions.jsonl").read_text().splitlines()]
    assert log[-1]["action"] == ROLLBACK and "shadow_agreement" in log[-1]["reason"]
