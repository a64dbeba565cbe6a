"""``gourmetgram load`` with bad input: one line on stderr, exit code 2, no traffic."""

from __future__ import annotations

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.procs import REPO_ROOT, child_env, free_port


class _Recorder(BaseHTTPRequestHandler):
    """Any HTTP server that is not the model API; it notes every request it gets."""

    seen: list[str] = []

    def _answer(self):
        self.seen.append(f"{self.command} {self.path}")
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def listener():
    """A real HTTP server on a free port that records what reaches it (to prove 'no traffic')."""
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Recorder.seen
    server.shutdown()
    server.server_close()


def run_load(*args):
    return subprocess.run([sys.executable, "-m", "gourmetgram", "load", *args], cwd=REPO_ROOT,
                          env=child_env(), capture_output=True, text=True, timeout=60)


def folder_with(tmp_path, *names):
    d = tmp_path / "photos"
    d.mkdir()
    for n in names:
        (d / n).write_text("x")
    return str(d)


BAD = [
    ("images missing folder", lambda t: ["images", str(t / "nope")], "does not exist"),
    ("images empty folder", lambda t: ["images", folder_with(t)], "no images"),
    ("images folder without images", lambda t: ["images", folder_with(t, "a.txt", "b.csv")], "no images"),
    ("images a file, not a folder", lambda t: ["images", folder_with(t, "a.txt") + "/a.txt"],
     "is not a folder"),
    ("images without folder", lambda t: ["images"], "needs a folder"),
    ("ramp with a folder", lambda t: ["ramp", str(t)], "takes no folder"),
    ("rate zero", lambda t: ["steady", "--rate", "0"], "--rate must be over 0"),
    ("rate negative", lambda t: ["steady", "--rate", "-5"], "--rate must be over 0"),
    ("rate text", lambda t: ["steady", "--rate", "fast"], "--rate must be a number"),
    ("rate nan", lambda t: ["steady", "--rate", "nan"], "finite"),
    ("clients fraction", lambda t: ["steady", "--clients", "2.5"], "--clients must be a whole number"),
    ("clients zero", lambda t: ["steady", "--clients", "0"], "--clients must be over 0"),
    ("clients huge", lambda t: ["steady", "--clients", "100000"], "more than 1000"),
    ("duration negative", lambda t: ["steady", "--duration", "-1"], "--duration must be over 0"),
    ("duration inf", lambda t: ["steady", "--duration", "inf"], "finite"),
    ("step zero", lambda t: ["ramp", "--step", "0"], "--step must be over 0"),
    ("timeout zero", lambda t: ["steady", "--timeout", "0"], "--timeout must be over 0"),
    ("max-duration zero", lambda t: ["steady", "--max-duration", "0"], "--max-duration must be over 0"),
    ("requests zero", lambda t: ["steady", "--requests", "0"], "--requests must be over 0"),
    ("client-ids zero", lambda t: ["steady", "--client-ids", "0"], "--client-ids must be over 0"),
    ("seed text", lambda t: ["errors", "--seed", "x"], "--seed must be a whole number"),
    ("rate and clients", lambda t: ["steady", "--rate", "5", "--clients", "2"], "exclude each other"),
    ("step on steady", lambda t: ["steady", "--step", "5"], "--step applies to ramp"),
    ("clients on ramp", lambda t: ["ramp", "--clients", "5"], "sets its own clients"),
    ("loop on steady", lambda t: ["steady", "--loop"], "--loop applies"),
    ("missing image", lambda t: ["steady", "--image", str(t / "no.jpg")], "is not a file"),
    ("report is a file", lambda t: ["steady", "--report", folder_with(t, "f") + "/f"], "not a folder"),
    ("unknown scenario", lambda t: ["flood"], "invalid choice"),
    ("unknown option", lambda t: ["steady", "--turbo"], "unrecognized arguments"),
]


@pytest.mark.parametrize("argv,message", [(a, m) for _, a, m in BAD], ids=[i for i, _, _ in BAD])
def test_bad_arguments(tmp_path, listener, argv, message):
    url, seen = listener
    proc = run_load(*argv(tmp_path), "--url", url)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert "\n" not in err and err.startswith("gourmetgram load: "), err
    assert message in err
    assert proc.stdout == ""
    assert seen == []  # rejected before any traffic, not even a probe


@pytest.mark.parametrize("url,message", [
    ("ftp://127.0.0.1/x", "not an http(s) URL"),
    ("127.0.0.1:8000", "not an http(s) URL"),
    ("http://127.0.0.1:99999", "bad port"),
])
def test_bad_urls(url, message):
    proc = run_load("steady", "--url", url)
    assert proc.returncode == 2
    assert message in proc.stderr and proc.stderr.count("\n") == 1


def test_unreachable_url():
    proc = run_load("steady", "--url", f"http://127.0.0.1:{free_port()}")
    assert proc.returncode == 2
    assert "cannot reach" in proc.stderr and proc.stderr.count("\n") == 1


def test_a_server_that_is_not_the_api(listener):
    url, seen = listener
    proc = run_load("steady", "--url", url, "--duration", "1")
    assert proc.returncode == 2
    assert "no model API" in proc.stderr and "--path" in proc.stderr
    assert proc.stderr.count("\n") == 1
    # It only looked (GET /readyz, /api/readyz); it sent nothing to predict on.
    assert seen == ["GET /readyz", "GET /api/readyz"]
