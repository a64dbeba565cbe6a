"""The canary library and commands on a whole test stack: sticky mode, ship, promote
under load, the smoke checks (Python and curl), and the CLI's refusals."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import requests

from gourmetgram.canary import routing as canary
from tests.canary_stack import CanaryStack, Load
from tests.procs import REPO_ROOT, child_env, free_port

CLIENT_IDS = [f"client-{i:04d}" for i in range(300)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, demo_model):
    with CanaryStack(tmp_path_factory.mktemp("canary-ops"), demo_model, sticky_canary=True) as s:
        yield s


def gg(stack: CanaryStack, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gourmetgram", *args], capture_output=True,
                          text=True, env=child_env(**stack.cli_env()), timeout=timeout)


def variant_for(session: requests.Session, url: str, **headers) -> str:
    r = session.get(url + "/api/healthz", headers=headers, cookies=None, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["variant"]


def test_sticky_keeps_each_client_on_one_variant(stack):
    stack.set_weight(30)
    seen: dict[str, set] = {}
    with requests.Session() as s:
        for cid in CLIENT_IDS:
            seen[cid] = {variant_for(s, stack.url, **{"X-Client-Id": cid}) for _ in range(4)}
    assert all(len(v) == 1 for v in seen.values()), [k for k, v in seen.items() if len(v) > 1][:5]
    on_canary = sum(v == {"canary"} for v in seen.values())
    # 300 ids at 30 %: binomial sd 2.6 points; +-10 points is about 4 sd.
    assert 0.20 * 300 <= on_canary <= 0.40 * 300, on_canary


def test_sticky_cookie_is_the_fallback_id(stack):
    stack.set_weight(30)
    with requests.Session() as s:
        by_header = {cid: variant_for(s, stack.url, **{"X-Client-Id": cid}) for cid in CLIENT_IDS[:60]}
    for cid, variant in by_header.items():
        r = requests.get(stack.url + "/api/healthz", cookies={"gg_client": cid}, timeout=30)
        assert r.json()["variant"] == variant


def test_sticky_anonymous_requests_split_per_request(stack):
    stack.set_weight(50)
    with requests.Session() as s:
        counts = Counter(variant_for(s, stack.url) for _ in range(200))
    assert 60 <= counts["canary"] <= 140, counts


def test_sticky_weight_zero_sends_nobody_to_the_canary(stack):
    stack.set_weight(0)
    with requests.Session() as s:
        seen = {variant_for(s, stack.url, **{"X-Client-Id": cid}) for cid in CLIENT_IDS}
    assert seen == {"production"}


def test_status_command(stack):
    stack.set_weight(0)
    out = gg(stack, "canary", "status")
    assert out.returncode == 0, out.stderr
    assert "canary weight: 0%" in out.stdout and "sticky" in out.stdout
    assert "version v1" in out.stdout and "serving v2" in out.stdout


def test_promote_leaves_traffic_on_canary_when_production_does_not_restart(stack, monkeypatch):
    def fail(variant):
        raise canary.CanaryError(f"systemctl restart food11-api@{variant} failed: start limit hit")
    monkeypatch.setattr(stack.services, "restart_api", fail)
    with pytest.raises(canary.CanaryError, match="Traffic stays 100% on the canary"):
        canary.promote(layout=stack.layout, services=stack.services)
    assert canary.load_state(stack.layout).canary_weight == 100
    assert requests.get(stack.status_url + "/gourmetgram-canary", timeout=5).text.startswith(
        "canary_weight=100 ")
    monkeypatch.undo()
    stack.set_weight(0)


def test_ship_then_promote_under_load_without_failures(stack, demo_model, tmp_path):
    new_model = tmp_path / "candidate.pt"
    new_model.write_bytes(demo_model.read_bytes())
    with Load(stack.url, clients=4) as load:
        load.wait_for(10)
        st = canary.ship(new_model, "v3", reason="test ship", layout=stack.layout, services=stack.services)
        assert st.canary_weight == 0 and st.models["canary"].version == "v3"
        assert canary.probe(st, "canary")["served_version"] == "v3"
        assert stack.layout.model_file("v3").read_bytes() == new_model.read_bytes()
        stack.set_weight(10)
        load.wait_for(20)
        st = canary.promote(reason="test promote", layout=stack.layout, services=stack.services)
        load.wait_for(20)
    assert load.failures == [], load.failures[:5]
    assert st.canary_weight == 0
    assert st.models["production"].version == "v3"
    assert canary.probe(st, "production")["served_version"] == "v3"
    assert stack.services.calls.count("restart canary") == 1
    assert stack.services.calls.count("restart production") == 1
    actions = [line.split('"action": "')[1].split('"')[0]
               for line in stack.layout.history_file.read_text().splitlines()]
    assert actions[-4:] == ["ship", "set", "promote-drain", "promote"]
    assert "restart production" not in stack.services.calls[:stack.services.calls.index("restart canary")]
    env = stack.layout.env_file("production").read_text()
    assert "FOOD11_MODEL_VERSION=v3\n" in env and str(stack.layout.model_file("v3")) in env


def test_promote_refuses_when_canary_is_production(stack):
    with pytest.raises(canary.CanaryError, match="nothing to promote"):
        canary.promote(layout=stack.layout, services=stack.services)


def test_ship_refuses_a_version_with_other_contents(stack, tmp_path):
    other = tmp_path / "other.pt"
    other.write_bytes(b"not the same model")
    with pytest.raises(canary.CanaryError, match="already installed"):
        canary.ship(other, "v3", layout=stack.layout, services=stack.services)


def test_ship_refuses_a_file_the_api_cannot_serve(stack, tmp_path):
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"garbage")
    before = stack.layout.stack_json.read_text()
    with pytest.raises(canary.CanaryError, match="cannot be served"):
        canary.ship(bad, "v9", layout=stack.layout, services=stack.services)
    assert stack.layout.stack_json.read_text() == before
    assert not stack.layout.model_file("v9").exists()


def test_smoke_passes_against_the_stack(stack):
    stack.set_weight(30)
    out = gg(stack, "smoke", "--url", stack.url, "--stack", str(stack.layout.stack_json))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("ok  ") == 8 and "8/8 checks passed" in out.stdout
    split = next(line for line in out.stdout.splitlines() if line.startswith("ok   split"))
    # 39 requests at 30 %: each variant is missed with probability below 1e-6.
    assert "39 predictions at canary weight 30%" in split and "canary" in split and "production" in split


def test_smoke_with_only_the_public_url(stack, tmp_path):
    """From the controller: no stack.json, no --api: the public checks, the split as
    seen, and a line naming the internal checks it skipped."""
    stack.set_weight(50)
    env = {**stack.cli_env(), "GOURMETGRAM_ETC_DIR": str(tmp_path / "no-etc")}
    out = subprocess.run([sys.executable, "-m", "gourmetgram", "smoke", "--url", stack.url],
                         capture_output=True, text=True, env=child_env(**env), timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "skipped: the model APIs' /readyz and /metrics and Nginx's stub_status" in out.stdout
    assert "3/3 checks passed" in out.stdout
    split = next(line for line in out.stdout.splitlines() if line.startswith("ok   split"))
    assert "60 predictions answered: canary" in split and "production" in split


def test_smoke_fails_clearly_against_a_broken_stack(stack):
    dead = f"http://127.0.0.1:{free_port()}"
    out = gg(stack, "smoke", "--url", stack.url, "--api", f"production={stack.apis['production'].url}",
             "--api", f"canary={dead}")
    assert out.returncode == 1
    fails = [line for line in out.stderr.splitlines() if line.startswith("FAIL")]
    assert len(fails) == 2 and all("canary" in line for line in fails), out.stderr
    out = gg(stack, "smoke", "--url", dead, "--api", f"production={stack.apis['production'].url}")
    assert out.returncode == 1
    assert [line.split(":")[0] for line in out.stderr.splitlines()] == ["FAIL page", "FAIL predict",
                                                                        "FAIL split"]


def test_smoke_script_with_curl(stack):
    script = str(REPO_ROOT / "scripts" / "smoke.sh")
    apis = [stack.apis["production"].url, stack.apis["canary"].url]
    ok = subprocess.run(["bash", script, stack.url, *apis, stack.status_url + "/stub_status"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    dead = f"http://127.0.0.1:{free_port()}"
    bad = subprocess.run(["bash", script, stack.url, apis[0], dead, stack.status_url + "/stub_status"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert [line for line in bad.stdout.splitlines() if line.startswith("FAIL")] == [
        f"FAIL canary ready: {dead}/readyz", f"FAIL canary metrics: {dead}/metrics"]


@pytest.mark.parametrize("args, message", [
    (["canary", "set", "--weight", "abc"], "not a whole number"),
    (["canary", "set", "--weight", "101"], "outside 0..100"),
    (["canary", "set", "--weight", "-5"], "outside 0..100"),
    (["canary", "set"], "--weight"),
    (["canary", "status", "--variant", "blue"], "unknown variant 'blue'"),
    (["canary", "ship", "--model", "/nonexistent/m.pt", "--version", "v4"], "does not exist"),
    (["canary", "ship", "--model", "{model}", "--version", "bad version"], "not valid"),
    (["canary", "frobnicate"], "invalid choice"),
    (["smoke", "--url", "ftp://x"], "not an http"),
    (["smoke", "--url", "http://x", "--api", "blue=http://y"], "VARIANT=URL"),
])
def test_bad_cli_args_change_nothing(stack, demo_model, args, message):
    before = (stack.layout.stack_json.read_text(), stack.layout.nginx_site.read_text())
    out = gg(stack, *[a.replace("{model}", str(demo_model)) for a in args])
    assert out.returncode == 2, out.stdout + out.stderr
    assert message in out.stderr
    assert (stack.layout.stack_json.read_text(), stack.layout.nginx_site.read_text()) == before


def test_commands_without_a_deployed_stack(tmp_path):
    env = child_env(GOURMETGRAM_ETC_DIR=str(tmp_path / "etc"), GOURMETGRAM_STATE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "gourmetgram", "canary", "rollback"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2 and "deploy the stack first" in out.stderr
    assert not Path(tmp_path / "etc" / "stack.json").exists()
