"""The API as deployed (``gourmetgram serve-api``: gunicorn + uvicorn workers): every bad
input is a 4xx with a JSON detail, the workers survive all of them, and a good request
still works; body limits hold for Content-Length and chunked bodies."""

from __future__ import annotations

import json
import os
import socket

import pytest
import requests

from tests.app_api.bad_inputs import MAX_PIXELS, bad_inputs
from tests.images import b64, photo_bytes
from tests.procs import ApiServer

SERVER_MAX_BODY = 1024 * 1024


def worker_pids(master: int) -> set[int]:
    with open(f"/proc/{master}/task/{master}/children") as fh:
        return {int(p) for p in fh.read().split()}


@pytest.fixture(scope="module")
def server(demo_model, tmp_path_factory):
    s = ApiServer(
        tmp_path_factory.mktemp("server"), demo_model, variant="canary", workers=2,
        env={"FOOD11_MAX_BODY_BYTES": str(SERVER_MAX_BODY), "FOOD11_MAX_PIXELS": str(MAX_PIXELS)},
    )
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def workers_at_start(server):
    pids = worker_pids(server.proc.pid)
    assert len(pids) == 2
    return pids


def _raw(port: int, head: bytes, body_parts: list[bytes]) -> tuple[int, bytes]:
    """Sends a request by hand (to control framing) and returns (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        try:
            for part in body_parts:
                sock.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before reading everything
        data = b""
        while b"\r\n\r\n" not in data or not _complete(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


@pytest.mark.parametrize(
    "case", [c for c in bad_inputs() if c[0] != "over_size"], ids=lambda c: c[0]
)
def test_bad_input_on_the_real_server(server, workers_at_start, case):
    _, body, headers, status, words = case
    r = requests.post(
        server.url + "/predict", data=body,
        headers={"content-type": "application/json", "connection": "close", **headers}, timeout=30,
    )
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert words.lower() in str(r.json()["detail"]).lower()


def test_body_over_limit_by_content_length(server, workers_at_start):
    """Refused from the header alone: the body is never sent."""
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % (SERVER_MAX_BODY + 1)
    )
    status, body = _raw(server.port, head, [])
    assert status == 413 and b"limit" in body


def test_body_over_limit_chunked(server, workers_at_start):
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b'{"image": "' + b"A" * 65536
    parts = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * (SERVER_MAX_BODY // len(chunk) + 2)
    status, body = _raw(server.port, head, parts + [b"0\r\n\r\n"])
    assert status == 413 and b"limit" in body


def test_chunked_body_under_limit_is_served(server, workers_at_start):
    payload = json.dumps({"image": b64(photo_bytes())}).encode()
    r = requests.post(
        server.url + "/predict",
        data=(payload[i : i + 4096] for i in range(0, len(payload), 4096)),
        headers={"content-type": "application/json"}, timeout=30,
    )
    assert r.status_code == 200, r.text


def test_workers_survived_and_still_serve(server, workers_at_start):
    """Runs after the bad inputs above (file order): same workers, good answers."""
    assert worker_pids(server.proc.pid) == workers_at_start
    assert all(os.path.exists(f"/proc/{p}") for p in workers_at_start)
    with requests.Session() as s:
        for _ in range(4):
            r = s.post(server.url + "/predict", json={"image": b64(photo_bytes())}, timeout=30)
            assert r.status_code == 200
            assert r.json()["variant"] == "canary"
            assert r.headers["X-Model-Variant"] == "canary"
    metrics = requests.get(server.url + "/metrics", timeout=10).text
    assert 'status="5xx"' not in metrics
    assert "http_requests_total{" in metrics and 'status="4xx"' in metrics
