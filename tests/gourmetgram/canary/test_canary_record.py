"""What every change leaves behind, without a running stack: the journal line (through a
real syslog datagram socket), the history line and the textfile metric."""

from __future__ import annotations

import json
import logging
import socket

from gourmetgram.canary import routing as canary
from tests.canary_stack import make_layout, stack_data


def test_change_goes_to_syslog_history_and_metric(tmp_path, monkeypatch):
    path = str(tmp_path / "log.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    logger = logging.getLogger("gourmetgram")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(canary, "SYSLOG_SOCKET", path)
    layout = make_layout(tmp_path)
    stack = stack_data(tmp_path / "m.pt", canary_weight=15)
    try:
        canary.setup_logging()
        canary._record(layout, stack, "set", "because")
        message = sock.recv(4096).decode()
    finally:
        for h in logger.handlers:
            h.close()
        sock.close()
    assert ("gourmetgram-canary: canary set: weight=15% shadow=0% production=v1 canary=v2 "
            "reason=because") in message
    entry = json.loads(layout.history_file.read_text())
    assert entry["action"] == "set" and entry["canary_weight"] == 15 and entry["reason"] == "because"
    lines = layout.canary_prom.read_text().splitlines()
    assert "# TYPE canary_weight gauge" in lines and "canary_weight 15" in lines
    assert not list(layout.textfile_dir.glob(".*")), "no temp file left for node_exporter to read"
