"""The load library's timing logic, against a plain HTTP server that answers slowly on
purpose (a slow endpoint, so the numbers are known; the model API is tested in
test_load_stack.py)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gourmetgram import load

SERVICE_S = 0.2


class _Slow(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    client_ids: list[str] = []

    def do_POST(self):
        self.client_ids.append(self.headers.get("X-Client-Id", ""))
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(SERVICE_S)
        body = json.dumps({"prediction": "Soup", "probability": 0.5}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Model-Variant", "slow")
        self.send_header("X-Model-Version", "v1")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def slow_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/predict"
    server.shutdown()
    server.server_close()


def spec(url, phases, **kw):
    return load.LoadSpec(url=url, phases=phases, payloads=load.Payloads.image(b"x"), **kw)


def test_open_loop_counts_queueing_as_latency(slow_url):
    """10 req/s for 2 s with one sender against a 0.2 s endpoint (5 req/s at most): each
    request waits for the one before, and that wait is latency, as a user would feel it.
    A closed-loop client would report 0.2 s throughout."""
    result = load.run_load(spec(slow_url, [load.Phase(2.0, rate=10)], max_in_flight=1))
    recs = result.records
    assert len(recs) == 20 and result.not_sent == 0
    assert all(r.status == 200 and r.variant == "slow" for r in recs)
    waits = [r.sent - r.scheduled for r in recs]
    assert waits[-1] > 1.5  # the last one went out ~2 s late
    # One sender: the last answer comes after 20 services, it was due at 1.9 s.
    assert max(r.latency for r in recs) >= 20 * SERVICE_S - 1.9 - 0.05
    service = sorted(r.latency - w for r, w in zip(recs, waits, strict=True))
    assert service[len(service) // 2] < 2 * SERVICE_S  # each one alone was quick
    assert result.summary()["latency_ms"]["p99"] > 1500


def test_closed_loop_measures_service_time(slow_url):
    result = load.run_load(spec(slow_url, [load.Phase(1.5, clients=2)]))
    s = result.summary()
    assert 10 <= s["requests"] <= 16  # 2 clients x 1.5 s / 0.2 s = 15
    assert s["latency_ms"]["p50"] == pytest.approx(SERVICE_S * 1000, rel=0.5)
    assert s["variants"]["slow v1"]["mean_confidence"] == pytest.approx(0.5)


@pytest.mark.parametrize("phase", [load.Phase(60, clients=2), load.Phase(60, rate=20)],
                         ids=["closed", "open"])
def test_max_duration_bounds_the_run(slow_url, phase):
    t0 = time.monotonic()
    result = load.run_load(spec(slow_url, [phase], max_duration=1.0))
    assert time.monotonic() - t0 < 3
    assert result.stop_reason == "--max-duration reached"
    assert result.records and not result.interrupted


def test_stop_ends_a_run_early_and_keeps_what_was_sent(slow_url):
    run = load.LoadRun(spec(slow_url, [load.Phase(60, clients=3)])).start()
    deadline = time.monotonic() + 10
    while run.snapshot()["requests"] < 5:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    run.stop()
    assert run.wait(5)
    result = run.result()
    assert result.interrupted and result.stop_reason == "interrupted"
    assert result.duration < 10 and len(result.records) >= 5


def test_unreachable_server_is_recorded_not_raised():
    url = "http://127.0.0.1:9/predict"  # discard port: nothing listens on loopback here
    result = load.run_load(spec(url, [load.Phase(None, clients=1)], max_requests=3, timeout=2))
    assert [r.status for r in result.records] == [0, 0, 0]
    assert result.summary()["status"] == {"connection error": 3}


class _Closing:
    """A raw HTTP/1.1 server that answers a connection's first ``answered`` requests with
    keep-alive and closes it on the next one without an answer: what an Nginx worker
    does to an idle keep-alive connection when a reload retires it."""

    def __init__(self, answered: int):
        self.answered = answered
        self.received = 0
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/predict"
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        f = conn.makefile("rb")
        with conn, f:
            for n in range(self.answered + 1):
                head = [line for line in iter(f.readline, b"\r\n") if line]
                if not head:
                    return
                length = next(int(h.split(b":")[1]) for h in head
                              if h.lower().startswith(b"content-length"))
                f.read(length)
                with self.lock:
                    self.received += 1
                if n == self.answered:
                    return  # closed without an answer
                body = b'{"prediction": "Soup", "probability": 0.5}'
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"X-Model-Variant: closing\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def closing():
    servers: list[_Closing] = []
    yield lambda answered: servers.append(_Closing(answered)) or servers[-1]
    for s in servers:
        s.close()


def test_a_request_closed_without_an_answer_is_sent_again_once(closing):
    """Each connection answers two requests and closes on the next, as a reloading Nginx
    may: the third goes out again on a new connection, which answers it and the fourth,
    and none fails."""
    server = closing(2)
    result = load.run_load(spec(server.url, [load.Phase(None, clients=1)], max_requests=7))
    assert [r.status for r in result.records] == [200] * 7
    assert [r.retried for r in result.records] == [False, False, True, False, True, False, True]
    assert server.received == 10 and server.connections == 4
    s = result.summary()
    assert s["retried"] == 3 and s["errors"] == 0
    assert "3 sent again after a closed connection" in load.format_summary(result)


def test_a_request_is_sent_again_at_most_once(closing):
    """A server that never answers: each request goes out twice, then counts as failed."""
    server = closing(0)
    result = load.run_load(spec(server.url, [load.Phase(None, clients=1)], max_requests=3))
    assert [(r.status, r.error, r.retried) for r in result.records] == [
        (0, "connection error", True)] * 3
    assert server.received == 6


def test_a_timeout_is_not_sent_again(slow_url):
    """The server may be working on it: a resend would double the load it is drowning in."""
    _Slow.client_ids = []
    result = load.run_load(spec(slow_url, [load.Phase(None, clients=1)], max_requests=2,
                                timeout=SERVICE_S / 4))
    assert [(r.error, r.retried) for r in result.records] == [("timeout", False)] * 2
    assert len(_Slow.client_ids) == 2


def test_client_ids_are_sent_and_recorded(slow_url):
    _Slow.client_ids = []
    result = load.run_load(spec(slow_url, [load.Phase(None, clients=3)], max_requests=12,
                                client_ids=3, seed=7))
    sent = [r.client_id for r in result.records]
    assert len(set(sent)) <= 3 and all(i.startswith("load-") for i in sent)
    assert sorted(_Slow.client_ids) == sorted(sent)
    again = load.LoadRun(spec(slow_url, [load.Phase(1)], client_ids=3, seed=7))
    first = load.LoadRun(spec(slow_url, [load.Phase(1)], client_ids=3, seed=7))
    assert again._client_ids == first._client_ids and len(set(first._client_ids)) == 3


def test_ramp_rate_shape_and_percentiles():
    assert [p.rate for p in load.stepped(load.RAMP_CLIENTS, 1, rate=50)] == [10, 20, 30, 50, 30, 20, 10]
    assert [p.clients for p in load.stepped(load.ERROR_RAMP_CLIENTS, 1)] == [1, 3, 5, 10, 5, 3, 1]
    values = list(range(1, 101))
    assert load.percentile(values, 50) == 50
    assert load.percentile(values, 99) == 99
    assert load.percentile(values, 100) == 100
