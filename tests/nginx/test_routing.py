"""The canary split through a real Nginx master and two real model APIs (demo model,
one worker each): accuracy of the weights, sticky clients, weight changes and a killed
canary under load, and a refused config."""

from __future__ import annotations

import os
import signal
from collections import Counter

import pytest
import requests

from gourmetgram.canary import routing as canary
from tests.canary_stack import CanaryStack, Load, count_variants


@pytest.fixture(scope="module")
def stack(tmp_path_factory, demo_model):
    with CanaryStack(tmp_path_factory.mktemp("canary"), demo_model) as s:
        yield s


def test_split_90_10_over_2000_requests(stack):
    """Weighted round robin is near exact per worker; +-2 points leaves room for the
    two Nginx workers' interleaving."""
    stack.set_weight(10)
    counts = count_variants(stack.url, 2000, cheap=True)
    assert set(counts) <= {"production", "canary"}, counts
    share = 100 * counts["canary"] / 2000
    assert 8.0 <= share <= 12.0, counts
    # The same split seen by predictions, from the X-Model-Variant header.
    sample = count_variants(stack.url, 100)
    assert set(sample) == {"production", "canary"} and 3 <= sample["canary"] <= 20, sample


@pytest.mark.parametrize("weight, expected", [(0, "production"), (100, "canary")])
def test_extreme_weights_are_exact(stack, weight, expected):
    stack.set_weight(weight)
    assert count_variants(stack.url, 400, cheap=True) == Counter({expected: 400})
    assert count_variants(stack.url, 40) == Counter({expected: 40})


def test_weight_metric_and_history_follow_changes(stack):
    stack.set_weight(25, reason="more canary")
    prom = stack.layout.canary_prom.read_text()
    assert "\ncanary_weight 25\n" in prom
    last = stack.layout.history_file.read_text().splitlines()[-1]
    assert '"canary_weight": 25' in last and "more canary" in last
    st = canary.status(stack.layout)
    assert st["canary_weight"] == 25
    assert st["variants"]["canary"]["ready"] and st["variants"]["canary"]["served_version"] == "v2"
    assert st["variants"]["production"]["weight"] == 75


def test_reload_never_restarts_the_master(stack):
    pid = stack.nginx.proc.pid
    stack.set_weight(30)
    stack.set_weight(5)
    assert stack.nginx.proc.popen.poll() is None and stack.nginx.proc.pid == pid
    assert "restart" not in " ".join(c for c in stack.services.calls if "api" in c)


def test_zero_downtime_while_weight_changes_five_times(stack):
    stack.set_weight(0)
    with Load(stack.url, clients=4) as load:
        for w in (10, 50, 100, 20, 0):
            load.wait_for(20)
            stack.set_weight(w)
        load.wait_for(20)
    assert load.failures == [], load.failures[:5]
    assert load.total() >= 120
    assert load.results["canary"] > 0 and load.results["production"] > 0


def test_invalid_render_is_refused_and_live_config_untouched(stack, monkeypatch):
    stack.set_weight(10)
    live = stack.layout.nginx_site.read_text()
    broken = canary.render_site(stack.stack, stack.layout).replace("keepalive 32;", "keepalive nonsense;")

    monkeypatch.setattr(canary, "render_site", lambda *a: broken)
    with pytest.raises(canary.CanaryError, match="nginx -t"):
        stack.set_weight(40)
    assert stack.layout.nginx_site.read_text() == live
    assert canary.load_state(stack.layout).canary_weight == 10
    assert "\ncanary_weight 10\n" in stack.layout.canary_prom.read_text()
    assert requests.get(stack.status_url + "/gourmetgram-canary", timeout=5).text.strip() == (
        "canary_weight=10 sticky=0 shadow=0")


def test_failed_full_check_puts_previous_site_back(stack, monkeypatch):
    """The site passes alone but the whole live config fails: previous file restored."""
    stack.set_weight(10)
    live = stack.layout.nginx_site.read_text()
    calls = len(stack.services.calls)

    def refuse():
        raise canary.CanaryError("nginx -t failed: duplicate upstream")
    monkeypatch.setattr(stack.services, "check_nginx", refuse)
    with pytest.raises(canary.CanaryError, match="duplicate upstream"):
        stack.set_weight(60)
    assert stack.layout.nginx_site.read_text() == live
    assert "reload" not in stack.services.calls[calls:]


@pytest.mark.parametrize("bad", [-1, 101, 10.5, "10", True, None])
def test_bad_weight_changes_nothing(stack, bad):
    before = stack.layout.nginx_site.read_text()
    calls = len(stack.services.calls)
    with pytest.raises(canary.CanaryError, match="weight"):
        stack.set_weight(bad)
    assert stack.layout.nginx_site.read_text() == before
    assert len(stack.services.calls) == calls


def test_failover_when_canary_is_killed_under_load(stack):
    stack.set_weight(50)
    canary_api = stack.apis["canary"]
    try:
        with Load(stack.url, clients=4) as load:
            load.wait_for(20)
            assert load.results["canary"] > 0
            os.killpg(canary_api.proc.pid, signal.SIGKILL)
            canary_api.proc.popen.wait(10)
            before = load.results["production"]
            load.wait_for(40)
        assert load.failures == [], load.failures[:5]
        assert load.results["production"] >= before + 40
        log = stack.nginx.error_log.read_text()
        assert "upstream server temporarily disabled" in log or "connect() failed" in log
        assert "no live upstreams" not in log
    finally:
        stack.restart_api("canary")
        stack.set_weight(0)
