"""A real ``gourmetgram serve-web`` (gunicorn, 2 workers) in front of a real API:
metrics add up across workers, oversized uploads are refused on the socket before
the body is sent, and it listens on loopback only."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import requests
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from app_web.settings import BUNDLED_TEST_PHOTO as LAB_PHOTO


def scrape(url: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(requests.get(url + "/metrics", timeout=5).text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def pids_counting(metrics_dir, metric_name: str) -> set[int]:
    """Worker pids whose own multiprocess file has a non-zero value of the metric."""
    pids = set()
    for f in metrics_dir.glob("counter_*.db"):
        for key, val, *_ in MmapedDict.read_all_values_from_file(str(f)):
            if metric_name in key and val > 0:
                pids.add(int(f.stem.split("_")[1]))
    return pids


def test_metrics_sum_all_workers(api, start_web):
    web = start_web(api.url, workers=2)
    n_health, n_predict = 120, 16
    photo = LAB_PHOTO.read_bytes()

    def health(_):
        # A new connection each time, so the kernel spreads them over both workers.
        return requests.get(web.url + "/healthz", timeout=10).status_code

    def predict(i):
        r = requests.post(web.url + "/predict", files={"file": (f"{i}.jpg", photo)},
                          headers={"Accept": "application/json"}, timeout=30)
        return r.status_code

    base = scrape(web.url)  # the readiness poll has already hit /healthz
    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(health, range(n_health))) == {200}
        assert set(pool.map(predict, range(n_predict))) == {200}

    assert len(pids_counting(web.metrics_dir, "web_requests_total")) == 2, "both workers served"
    for _ in range(3):  # every scrape, whichever worker answers it, sees the same totals
        s = scrape(web.url)
        healthz = value(s, "web_requests_total", route="/healthz", method="GET", status="2xx")
        assert healthz - value(base, "web_requests_total", route="/healthz", method="GET",
                               status="2xx") == n_health
        assert value(s, "web_requests_total", route="/predict", method="POST", status="2xx") == n_predict
        assert value(s, "web_request_duration_seconds_count", route="/predict") == n_predict
        assert value(s, "web_upstream_request_duration_seconds_count") == n_predict
        assert value(s, "web_upstream_failures_total", reason="connection") == 0


def test_api_failure_metrics_under_gunicorn(closed_port_url, start_web):
    web = start_web(closed_port_url, workers=2)
    for _ in range(3):
        r = requests.get(web.url + "/test", headers={"Accept": "application/json"}, timeout=30)
        assert r.status_code == 503 and "reach" in r.json()["detail"]
    s = scrape(web.url)
    assert value(s, "web_upstream_failures_total", reason="connection") == 6  # each call retried once
    assert value(s, "web_requests_total", route="/test", method="GET", status="5xx") == 3


def test_oversized_upload_refused_before_body_is_sent(api, start_web):
    web = start_web(api.url)
    with socket.create_connection(("127.0.0.1", web.port), timeout=10) as s:
        s.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 500000000\r\n\r\n--b\r\n"
        )
        start = time.monotonic()
        answer = b""
        while b"</html>" not in answer and b"}" not in answer:
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
        assert time.monotonic() - start < 5
    head, _, body = answer.decode("latin-1").partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 413"), head[:200]
    assert "500 MB" in body and "too large" in body or "photos up to" in body


def test_listens_on_loopback_only(api, start_web):
    web = start_web(api.url)
    assert requests.get(web.url + "/", timeout=5).status_code == 200
    addr = socket.gethostbyname(socket.gethostname())
    if addr.startswith("127."):
        return  # no other address to try on this machine
    with socket.socket() as s:
        s.settimeout(2)
        assert s.connect_ex((addr, web.port)) != 0
