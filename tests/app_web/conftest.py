"""Fixtures for the web app: one real model API for all of them (the demo model), real
``serve-web`` processes, and small HTTP upstreams for the failures a healthy API
never produces (a 500, garbage, silence)."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from pathlib import Path

import pytest

from app_web.settings import BUNDLED_TEST_PHOTO
from tests.app_web import postgres
from tests.procs import ApiServer, WebServer, free_port, server_factory

LAB_PHOTO = BUNDLED_TEST_PHOTO  # the lab's test photo, shipped with the web app


@pytest.fixture(scope="session")
def pg_cluster():
    """A real PostgreSQL cluster of its own (tests/app_web/postgres.py), for the session."""
    if not postgres.available():
        pytest.skip("needs Debian's postgresql (scripts/install-test-deps.sh)")
    cluster = postgres.Cluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(autouse=True)
def feedback_dir(tmp_path, monkeypatch) -> Path:
    """Every web app in a test keeps its feedback in the test's folder, never /var/lib."""
    d = tmp_path / "feedback"
    monkeypatch.setenv("WEB_FEEDBACK_DIR", str(d))
    return d


@pytest.fixture(scope="session")
def api(tmp_path_factory, demo_model) -> ApiServer:
    """A real ``gourmetgram serve-api`` with the demo model, shared by the web tests."""
    server = ApiServer(tmp_path_factory.mktemp("api"), demo_model)
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture
def start_web(tmp_path):
    """Factory: ``start_web(api_url, workers=...)`` -> a ready WebServer."""
    yield from server_factory(lambda api_url, **kw: WebServer(tmp_path, api_url, **kw))


class Upstream:
    """A stand-in model API on a free port that answers what a test tells it to and
    records the requests it got (status, body and headers are set per test)."""

    def __init__(self):
        self.status = 200
        self.body = json.dumps(
            {"prediction": "Soup", "probability": 0.9, "model_version": "v-stub", "variant": "canary"}
        ).encode()
        self.requests: list[dict] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                outer.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": self.rfile.read(length)}
                )
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream():
    u = Upstream()
    yield u
    u.close()


@pytest.fixture
def silent_api():
    """A socket that accepts connections (kernel backlog) and never answers: a hung API."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()


@pytest.fixture
def closed_port_url():
    """Nothing listens here: the API is down."""
    return f"http://127.0.0.1:{free_port()}"
