"""Slow clients against the real app servers' own ports (gunicorn + our worker classes,
no Nginx in front): stalled connections (nothing sent, or part of the headers) do not
take ``/healthz`` down and are closed after the header deadline; a client that trickles
its headers is closed at the deadline, not per read; keep-alive and split headers
within the deadline still work."""

from __future__ import annotations

import socket
import time

import pytest
import requests

from tests.procs import ApiServer, WebServer, server_factory

HEADER_TIMEOUT = 2.0
STALLED = 40
# /healthz answers within this while the stalled clients are open (it takes ~10 ms).
HEALTH_BOUND_S = 1.0
# The deadline is checked once a second by gthread's main loop.
CLOSE_SLACK_S = 2.5


@pytest.fixture(scope="module", params=["web", "api"])
def server(request, tmp_path_factory, demo_model):
    tmp_path = tmp_path_factory.mktemp(f"slow-clients-{request.param}")

    def make(kind):
        if kind == "web":
            return WebServer(tmp_path, "http://127.0.0.1:9", workers=1,
                             env={"WEB_HEADER_TIMEOUT": str(HEADER_TIMEOUT), "WEB_THREADS": "4"})
        return ApiServer(tmp_path, demo_model, workers=1,
                         env={"FOOD11_HEADER_TIMEOUT": str(HEADER_TIMEOUT)})

    for start in server_factory(make):
        yield start(request.param)


def connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


def is_closed(s: socket.socket) -> bool:
    """The server closed it (EOF or reset); False while it is still open."""
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def read_response(s: socket.socket) -> bytes:
    """One whole response (its head and Content-Length body) from a blocking socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        body += s.recv(65536)
    assert len(body) == length, (head, body)
    return head


def health_seconds(server) -> float:
    start = time.monotonic()
    r = requests.get(server.url + "/healthz", timeout=10)
    assert r.status_code == 200, r.text
    return time.monotonic() - start


@pytest.mark.parametrize("sent", [b"", b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: "],
                         ids=["nothing", "partial-headers"])
def test_stalled_clients_neither_block_health_nor_stay_open(server, sent):
    stalled = [connect(server) for _ in range(STALLED)]
    opened = time.monotonic()
    try:
        for s in stalled:
            if sent:
                s.sendall(sent)
        # The stock gthread worker (4 threads) would not answer at all here.
        took = [health_seconds(server) for _ in range(10)]
        assert max(took) < HEALTH_BOUND_S, took
        assert not any(is_closed(s) for s in stalled), "closed before the deadline"
        deadline = opened + HEADER_TIMEOUT + CLOSE_SLACK_S
        while time.monotonic() < deadline and not all(is_closed(s) for s in stalled):
            time.sleep(0.1)
        open_left = sum(not is_closed(s) for s in stalled)
        assert open_left == 0, f"{open_left}/{STALLED} still open after the deadline"
        assert health_seconds(server) < HEALTH_BOUND_S
    finally:
        for s in stalled:
            s.close()


def test_trickled_headers_are_cut_at_the_deadline_not_per_read(server):
    """One byte every 0.3 s never idles for a whole read timeout, and is still closed."""
    s = connect(server)
    start = time.monotonic()
    try:
        for byte in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200:
            try:
                s.sendall(bytes([byte]))
            except OSError:
                break
            if is_closed(s):
                break
            s.setblocking(True)
            time.sleep(0.3)
        took = time.monotonic() - start
        assert is_closed(s)
        assert HEADER_TIMEOUT - 0.5 < took < HEADER_TIMEOUT + CLOSE_SLACK_S, took
    finally:
        s.close()


def test_headers_split_within_the_deadline_are_answered(server):
    s = connect(server)
    try:
        for part in (b"GET /healthz HT", b"TP/1.1\r\nHost: 127.0.0.1\r\n", b"Connection: close\r\n\r\n"):
            s.sendall(part)
            time.sleep(HEADER_TIMEOUT / 5)
        s.settimeout(5)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    finally:
        s.close()


def test_kept_alive_connection_serves_requests_then_idles_out(server):
    """Many requests on one connection; the next request's head has the same deadline."""
    s = connect(server)
    try:
        s.settimeout(5)
        for _ in range(20):
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            reply = read_response(s)
            assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        start = time.monotonic()
        while not is_closed(s) and time.monotonic() - start < HEADER_TIMEOUT + CLOSE_SLACK_S + 6:
            time.sleep(0.1)
        assert is_closed(s)
    finally:
        s.close()


def test_a_large_body_after_the_headers_is_still_read(server):
    """The deadline covers the head only: a body sent after it is read as before."""
    body = b"x" * 3_000_000
    r = requests.post(server.url + "/predict", data=body, timeout=30,
                      headers={"Content-Type": "application/octet-stream"})
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert health_seconds(server) < HEALTH_BOUND_S
