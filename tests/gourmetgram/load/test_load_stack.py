"""The load generator against real API instances and a real Nginx with two variants:
what it reports must agree with what the servers counted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from gourmetgram import load
from tests.canary_stack import CanaryStack
from tests.gourmetgram.load.server_counts import delta, predict_counts, settled
from tests.images import encode, photo_bytes, textured
from tests.procs import REPO_ROOT, child_env


@pytest.fixture(scope="module")
def stack(tmp_path_factory, demo_model):
    """Production and canary behind the product's Nginx site at 25 % (3:1)."""
    s = CanaryStack(tmp_path_factory.mktemp("load-stack"), demo_model)
    try:
        s.start().set_weight(25)
        yield s
    finally:
        s.stop()


def counts(stack):
    return {api.variant: predict_counts(api.url) for api in stack.apis.values()}


def deltas(before, after):
    return {v: delta(before[v], after[v]) for v in before}


def spec(url, phases, payloads=None, timeout=30.0, **kw):
    """A generous timeout: other tests share this machine, and a request the client gave
    up on would still be counted by the server."""
    return load.LoadSpec(url=url, phases=phases, timeout=timeout,
                         payloads=payloads or load.Payloads.image(photo_bytes()), **kw)


def after(stack, before, n):
    """Per-variant deltas since ``before``, once the servers have counted ``n`` requests."""
    return settled(lambda: deltas(before, counts(stack)), n)


def test_endpoint_detection(stack):
    assert load.resolve_endpoint(stack.apis["production"].url) == stack.apis["production"].url + "/predict"
    assert load.resolve_endpoint(stack.url) == stack.url + "/api/predict"
    assert load.resolve_endpoint(stack.url + "/api/predict") == stack.url + "/api/predict"
    assert load.resolve_endpoint(stack.url, path="/api/predict") == stack.url + "/api/predict"


def test_counts_and_variant_shares_match_the_servers(stack):
    before = counts(stack)
    url = load.resolve_endpoint(stack.url)
    # A count, not a time: 40 requests whatever the machine's load (10 full 3:1 cycles).
    result = load.run_load(spec(url, [load.Phase(None, clients=3)], max_requests=40))
    d = after(stack, before, len(result.records))
    s = result.summary()
    assert s["requests"] == 40
    assert s["status"] == {"200": s["requests"]}
    # Every request the generator counted reached a server, and no other.
    assert s["requests"] == sum(sum(v.values()) for v in d.values())
    # The per-variant split from the response headers equals each server's own count.
    by_variant = {v["variant"]: v for v in s["variants"].values()}
    assert set(by_variant) == {"production", "canary"}
    for variant in ("production", "canary"):
        assert by_variant[variant]["requests"] == d[variant]["2xx"]
    assert by_variant["canary"]["model_version"] == "v2"
    assert by_variant["production"]["model_version"] == "v1"
    # Nginx's weighted round robin at 3:1 gives the canary a quarter (stated tolerance 5 points).
    assert by_variant["canary"]["share"] == pytest.approx(0.25, abs=0.05)
    assert sum(v["share"] for v in by_variant.values()) == pytest.approx(1.0)


def test_error_ramp_gives_only_4xx(stack):
    before = counts(stack)
    url = load.resolve_endpoint(stack.url)
    result = load.run_load(spec(url, load.stepped(load.ERROR_RAMP_CLIENTS, 0.4),
                                load.Payloads.errors(seed=1), scenario="errors"))
    d = after(stack, before, len(result.records))
    s = result.summary()
    assert s["requests"] > 50
    assert set(s["status"]) == {"400", "422"}, s["status"]
    assert {r.input for r in result.records} == {"{}", '{"image": "bad data"}'}
    assert sum(v["5xx"] for v in d.values()) == 0
    assert sum(v["2xx"] for v in d.values()) == 0
    assert sum(v["4xx"] for v in d.values()) == s["requests"]
    # The ramp's shape: the client count reaches 10 in the middle step.
    assert max(r.clients for r in result.records) == 10


def test_open_loop_holds_the_rate(stack):
    """20 s at 10 req/s against one instance (1 worker, the small photo): the requests go
    out on schedule, within 5% overall and 10% in every 5 s window, and the server counts
    each one. Enough senders that a server slowed by other tests on this 2-core machine
    makes the requests wait (latency), not the schedule slip."""
    api = stack.apis["production"]
    before = predict_counts(api.url)
    rate, seconds = 10.0, 20.0
    result = load.run_load(spec(api.url + "/predict", [load.Phase(seconds, rate=rate)],
                                timeout=60, max_in_flight=256))
    d = settled(lambda: delta(before, predict_counts(api.url)), len(result.records))
    s = result.summary()
    assert s["requests"] == d["2xx"] == pytest.approx(rate * seconds, rel=0.05)
    assert s["not_sent"] == 0
    sent = sorted(r.sent for r in result.records)
    assert (len(sent) - 1) / (sent[-1] - sent[0]) == pytest.approx(rate, rel=0.05)
    for w in range(4):  # and no burst or gap: each 5 s window within 10% (5 requests)
        in_window = sum(1 for t in sent if 5 * w <= t < 5 * (w + 1))
        assert in_window == pytest.approx(rate * 5, rel=0.1), (w, in_window)
    # Latency counts from the scheduled time, never before it.
    assert all(r.sent >= r.scheduled - 1e-3 for r in result.records)
    assert all(r.latency >= r.sent - r.scheduled for r in result.records)


def test_images_once_and_in_a_loop(stack, tmp_path):
    for i in range(5):
        (tmp_path / "sub").mkdir(exist_ok=True)
        (tmp_path / "sub" / f"p{i}.jpg").write_bytes(encode(textured(seed=i), quality=85))
    (tmp_path / "notes.txt").write_text("not an image")
    url = stack.apis["production"].url + "/predict"
    once = load.run_load(spec(url, [load.Phase(None, clients=2)], load.Payloads.folder(tmp_path, seed=3)))
    assert sorted(r.input for r in once.records) == [f"sub/p{i}.jpg" for i in range(5)]
    assert once.stop_reason == "all inputs sent"
    looped = load.run_load(spec(url, [load.Phase(None, clients=2)],
                                load.Payloads.folder(tmp_path, loop=True), max_requests=12))
    assert len(looped.records) == 12
    assert all(r.status == 200 for r in looped.records)


def run_cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "gourmetgram", "load", *args], cwd=REPO_ROOT,
                          env=child_env(), capture_output=True, text=True, timeout=120, **kw)


def test_ramp_report_files_and_plot(stack, tmp_path):
    before = counts(stack)
    report = tmp_path / "report"
    proc = run_cli("ramp", "--url", stack.url, "--step", "1", "--timeout", "30",
                   "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((report / "summary.json").read_text())
    d = after(stack, before, summary["requests"])
    assert summary["requests"] == sum(sum(v.values()) for v in d.values())
    assert summary["url"] == stack.url + "/api/predict"
    rows = (report / "requests.csv").read_text().splitlines()
    assert rows[0].startswith("scheduled,sent,latency,status,variant")
    assert len(rows) - 1 == summary["requests"]
    with Image.open(report / "load.png") as im:
        im.verify()
    with Image.open(report / "load.png") as im:
        assert im.format == "PNG" and im.size[0] > 600 and im.size[1] > 400
    # The printed table names both variants with their versions.
    assert "canary" in proc.stdout and "v2" in proc.stdout and "production" in proc.stdout
    assert "p99" in proc.stdout and "200:" in proc.stdout
    # Not a terminal: plain progress lines (every 5 s) on stderr, not a redrawn bar.
    progress = [line for line in proc.stderr.splitlines() if "req/s" in line]
    assert progress and all("p50" in line and "clients" in line for line in progress)
    assert "\r" not in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_and_prints_what_was_sent(stack, sig):
    api = stack.apis["production"]
    before = predict_counts(api.url)
    p = subprocess.Popen(
        [sys.executable, "-m", "gourmetgram", "load", "steady", "--url", api.url,
         "--clients", "2", "--duration", "120", "--timeout", "30"],
        cwd=REPO_ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while predict_counts(api.url)["2xx"] - before["2xx"] < 10:
            assert p.poll() is None and time.monotonic() < deadline, p.stderr.read()
            time.sleep(0.1)
        p.send_signal(sig)
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, err
    assert "interrupted" in out
    assert "Traceback" not in err
    sent = int(out.split("requests", 1)[1].split()[0])
    assert sent == settled(lambda: delta(before, predict_counts(api.url)), sent)["2xx"] >= 10
    # It stopped early: nowhere near 120 s of traffic.
    duration = float(out.split("duration", 1)[1].split()[0])
    assert duration < 60
