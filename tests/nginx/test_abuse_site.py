"""Abuse through the real Nginx site in front of real gunicorn APIs (tests/canary_stack.py):
bad shapes, content types, methods, Hosts, internal paths and a stalled client. Each
case is a 4xx or a closed connection; afterwards the same API worker answers /healthz,
its RSS stays under the bound of docs/canary.md, and no new metric series appeared."""

from __future__ import annotations

import socket
import time

import pytest
import requests

from tests.app_api.bad_inputs import bad_inputs
from tests.canary_stack import BODY, CanaryStack

# Peak RSS of one demo-model API worker while this suite runs (docs/canary.md).
WORKER_RSS_BOUND_MIB = 1200


@pytest.fixture(scope="module")
def stack(tmp_path_factory, demo_model):
    with CanaryStack(tmp_path_factory.mktemp("abuse"), demo_model) as s:
        yield s


def worker_pid(api) -> int:
    kids = open(f"/proc/{api.proc.pid}/task/{api.proc.pid}/children").read().split()
    assert len(kids) == 1, kids
    return int(kids[0])


def rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):  # the peak, so a spike between checks is seen too
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def series(url: str) -> set[str]:
    text = requests.get(url + "/metrics", timeout=10).text
    return {ln.rsplit(" ", 1)[0] for ln in text.splitlines() if ln and not ln.startswith("#")}


@pytest.fixture
def guarded(stack):
    """Same worker, bounded memory and the same metric series after the case."""
    api = stack.apis["production"]
    pid = worker_pid(api)
    # The series a harmless 4xx, a health check and a scrape create, so that "before"
    # already has them.
    requests.post(stack.url + "/api/predict", data=b"x", headers={"content-type": "text/plain"})
    requests.get(api.url + "/healthz", timeout=10)
    requests.request("WARMUP", stack.url + "/api/healthz", timeout=10)  # method="other"
    requests.post(stack.url + "/api/predict", json=BODY, timeout=30).raise_for_status()
    series(api.url)
    before = series(api.url)
    yield
    assert worker_pid(api) == pid
    assert requests.get(api.url + "/healthz", timeout=10).status_code == 200
    assert rss_mib(pid) < WORKER_RSS_BOUND_MIB
    series(api.url)
    new = series(api.url) - before
    assert not new, sorted(new)[:5]


# pixel_bomb (25 Mpx) and over_size depend on the small limits of the in-process tests.
@pytest.mark.parametrize("case", [c for c in bad_inputs() if c[0] not in ("over_size", "pixel_bomb")],
                         ids=lambda c: c[0])
def test_bad_bodies_through_nginx(stack, guarded, case):
    _, body, headers, status, words = case
    r = requests.post(stack.url + "/api/predict", data=body,
                      headers={"content-type": "application/json", **headers}, timeout=30)
    assert r.status_code == status, r.text
    assert words.lower() in str(r.json()["detail"]).lower()


@pytest.mark.parametrize("method", ["BREW", "X" * 40, "PROPFIND", "TRACE"])
def test_invented_methods(stack, guarded, method):
    r = requests.request(method, stack.url + "/api/healthz", timeout=10)
    assert 400 <= r.status_code < 500


@pytest.mark.parametrize("host", ["a" * 64 + ".example", "x_y..z", "-bad.example"])
def test_bad_host_refused_by_nginx(stack, guarded, host):
    r = requests.get(stack.url + "/api/healthz", headers={"Host": host}, timeout=10)
    assert r.status_code == 400


@pytest.mark.parametrize("path", ["/api/metrics", "/api/model", "/api/docs", "/api/openapi.json",
                                  "/metrics", "/api/model/"])
def test_internal_endpoints_are_not_public(stack, guarded, path):
    assert requests.get(stack.url + path, timeout=10).status_code == 404


def test_stalled_clients_are_dropped_and_health_stays_up(stack, guarded):
    """Ten clients send half a request line and stall: Nginx closes them after its
    client_header_timeout (10 s); /api/healthz answers meanwhile."""
    port = stack.stack.nginx_port
    socks = []
    for _ in range(10):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x")
        socks.append(s)
    start = time.monotonic()
    assert requests.get(stack.url + "/api/healthz", timeout=5).status_code == 200
    for s in socks:
        data = s.recv(100)  # blocks until Nginx closes the connection
        assert data == b"" or data.startswith(b"HTTP/1.1 408"), data
        s.close()
    assert time.monotonic() - start < 25


def test_peak_worker_rss_is_under_the_bound(stack):
    """Last in the file: the worker's peak RSS over the whole suite."""
    peak = rss_mib(worker_pid(stack.apis["production"]))
    print(f"peak API worker RSS (VmHWM) over the abuse suite: {peak:.0f} MiB")
    assert peak < WORKER_RSS_BOUND_MIB
