"""Grafana is installed wherever its APT repository is reachable: the decision as a
function of (asked, installed, reachable), and the host-side probe command run for real
against a local HTTP server and a closed port (no outside network needed)."""

from __future__ import annotations

import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gourmetgram.deploy.facts import UrlReachable, reachability_command
from grafana.tasks import REPOSITORY, install_decision
from tests.procs import free_port


@pytest.mark.parametrize("requested,installed,reachable,install,says", [
    (True, False, True, True, None),
    (True, True, False, True, None),  # installed before: kept and configured
    (True, False, False, False, "not reachable from this host"),
    (False, False, True, False, "install_grafana=False"),
    (False, True, True, False, "install_grafana=False"),
])
def test_install_decision(requested, installed, reachable, install, says):
    got, warning = install_decision(requested, installed, reachable)
    assert got is install
    if says is None:
        assert warning is None
    else:
        assert says in warning and "\n" not in warning  # one line
        if "reachable" in says:
            assert REPOSITORY in warning


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"key")

    def log_message(self, *args):
        pass


def _probe(url: str, timeout: int = 2) -> bool:
    out = subprocess.run(["bash", "-c", reachability_command(url, timeout)],
                         capture_output=True, text=True, timeout=30).stdout
    return UrlReachable().process(out.splitlines())


def test_probe_says_reachable_for_a_serving_url_and_unreachable_for_a_closed_port():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert _probe(f"http://127.0.0.1:{server.server_address[1]}/gpg.key") is True
    finally:
        server.shutdown()
        server.server_close()
    assert _probe(f"http://127.0.0.1:{free_port()}/gpg.key") is False


def test_probe_gives_up_within_its_timeout():
    """A black-holed address (TEST-NET-1, never routed) must not hang the deploy."""
    import time

    start = time.monotonic()
    assert _probe("https://192.0.2.1/gpg.key", timeout=2) is False
    assert time.monotonic() - start < 10
