"""Metrics are exact across gunicorn workers (prometheus_client multiprocess mode):
N requests spread over 2 workers read back as exactly N, stale files from an earlier
run do not leak into the counts, and a killed worker's counts are kept."""

from __future__ import annotations

import http.client
import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.parser import text_string_to_metric_families

from tests.images import b64, encode, photo_bytes, textured
from tests.procs import ApiServer, free_port

N = 200
VERSION = "demo-effnet-lite0-1"


def scrape(url: str) -> dict[str, list]:
    """name -> [(sample name, labels, value)] of one /metrics read."""
    text = requests.get(url + "/metrics", timeout=10).text
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        out.setdefault(fam.name, []).extend((s.name, s.labels, s.value) for s in fam.samples)
    return out


def total(m: dict, family: str, sample: str, **labels) -> float:
    return sum(
        v for name, lab, v in m.get(family, [])
        if name == sample and all(lab.get(k) == want for k, want in labels.items())
    )


def plant_stale_file(metrics_dir) -> None:
    """What a previous run (killed without cleanup) leaves behind: a counter of 1000."""
    metrics_dir.mkdir(parents=True, exist_ok=True)
    d = MmapedDict(str(metrics_dir / "counter_999999.db"))
    labels = {"handler": "/predict", "method": "POST", "status": "2xx",
              "variant": "production", "model_version": VERSION}
    d.write_value(
        mmap_key("http_requests", "http_requests_total", list(labels), list(labels.values()), "x"),
        1000.0, 0.0,
    )
    d.close()


def predicts_per_pid(metrics_dir) -> dict[int, float]:
    counts = {}
    for f in metrics_dir.glob("counter_*.db"):
        pid = int(f.stem.split("_")[1])
        for key, value, _, _ in MmapedDict.read_all_values_from_file(str(f)):
            _, name, labels, _ = json.loads(key)
            if name == "http_requests_total" and labels.get("handler") == "/predict":
                counts[pid] = counts.get(pid, 0) + value
    return counts


@pytest.fixture(scope="module")
def server(demo_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("metrics")
    port = free_port()
    metrics_dir = tmp / f"metrics-production-{port}"  # the directory ApiServer passes
    plant_stale_file(metrics_dir)
    s = ApiServer(tmp, demo_model, variant="production", workers=2, port=port)
    s.metrics_dir = metrics_dir
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


def test_n_requests_over_two_workers_read_back_exactly_n(server):
    image = b64(encode(textured((320, 240), seed=3), quality=90))

    def one(_):
        # A new connection each time, so the kernel spreads them over both workers.
        r = requests.post(server.url + "/predict", json={"image": image},
                          headers={"connection": "close"}, timeout=60)
        return r.status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(one, range(N)))
    assert codes == [200] * N

    m = scrape(server.url)
    assert total(m, "http_requests", "http_requests_total", handler="/predict",
                 status="2xx", variant="production", model_version=VERSION) == N
    assert total(m, "predicted_class", "predicted_class_total", variant="production") == N
    assert total(m, "prediction_confidence", "prediction_confidence_count") == N
    assert total(m, "prediction_confidence", "prediction_confidence_bucket", le="1.0") == N
    assert total(m, "preprocess_duration_seconds", "preprocess_duration_seconds_count") == N
    assert total(m, "inference_batch_size", "inference_batch_size_sum") == N
    assert total(m, "http_request_duration_seconds", "http_request_duration_seconds_count",
                 handler="/predict") == N
    info = [lab for name, lab, v in m["model_info"] if v == 1]
    assert info and info[0]["variant"] == "production" and info[0]["version"] == VERSION
    assert len(info[0]["sha256"]) == 64 and info[0]["form"] == "gourmetgram-archive"
    buckets = sorted(float(lab["le"]) for name, lab, _ in m["prediction_confidence"]
                     if name.endswith("_bucket") and lab["le"] != "+Inf")
    assert buckets == [round(0.1 * i, 1) for i in range(11)]

    per_pid = predicts_per_pid(server.metrics_dir)
    assert 999999 not in per_pid, "the stale file of an earlier run was not removed"
    assert len(per_pid) == 2 and all(v > 0 for v in per_pid.values()), per_pid
    assert sum(per_pid.values()) == N


def test_killed_worker_keeps_its_counts(server):
    before = total(scrape(server.url), "http_requests", "http_requests_total",
                   handler="/predict", status="2xx")
    with open(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children") as fh:
        victim = int(fh.read().split()[0])
    os.kill(victim, signal.SIGKILL)

    def respawned() -> bool:
        with open(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children") as fh:
            pids = {int(p) for p in fh.read().split()}
        return len(pids) == 2 and victim not in pids and requests.get(
            server.url + "/readyz", timeout=2).status_code == 200

    server.proc.wait_until(respawned, 90, "a replacement worker")
    m = scrape(server.url)
    assert total(m, "http_requests", "http_requests_total", handler="/predict",
                 status="2xx") == before
    # Only the scrape itself is in flight; the dead worker's gauge is gone.
    assert total(m, "http_requests_in_flight", "http_requests_in_flight") == 1


def test_sigterm_finishes_every_accepted_request(server):
    """A stop (systemd's SIGTERM to the master) loses nothing already accepted: requests in
    flight all get their answer, then the service exits cleanly. Runs last in this module."""
    body = json.dumps({"image": b64(photo_bytes(large=True))}).encode()
    n = 12
    conns = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=60) for _ in range(n)]
    for c in conns:  # accepted by a worker before the stop
        c.request("GET", "/healthz")
        assert c.getresponse().read()
    for c in conns:
        c.request("POST", "/predict", body, {"Content-Type": "application/json"})

    def in_flight() -> float:
        return total(scrape(server.url), "http_requests_in_flight", "http_requests_in_flight")

    server.proc.wait_until(lambda: in_flight() >= n + 1, 60, "requests in flight")
    os.kill(server.proc.pid, signal.SIGTERM)
    statuses = []
    for c in conns:
        r = c.getresponse()
        statuses.append((r.status, b"prediction" in r.read()))
        c.close()
    assert statuses == [(200, True)] * n
    assert server.proc.popen.wait(60) == 0
