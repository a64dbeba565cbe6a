"""The mtail program over access-log lines in the site's `gourmetgram` format, run by
Debian's mtail (one-shot mode): tries and failed tries per API server, retried
requests counted as a failure of their first server. The live path (real Nginx
writing the log, mtail scraped by Prometheus) runs in test_analysis_rollout.py."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from gourmetgram.host.layout import host_layout
from gourmetgram.host.render import REPO_ROOT, render
from gourmetgram.host.stack import load_stack

MTAIL = shutil.which("mtail")
pytestmark = pytest.mark.skipif(MTAIL is None, reason="mtail is not installed (apt install mtail)")

LINE = ('127.0.0.1 [02/Dec/2026:11:00:00 +0000] "{req}" {status} 120 rt=0.050 upstream={up} '
        'ustatus={us} urt=0.049 variant=production version=v1 client=""')
P, C = "127.0.0.1:8000", "127.0.0.1:8001"


def counters(tmp_path, lines: list[str]) -> dict[tuple[str, str], float]:
    log = tmp_path / "gourmetgram-access.log"
    log.write_text("\n".join(lines) + "\n")
    out = subprocess.run([MTAIL, "--progs", str(REPO_ROOT / "nginx" / "mtail"), "--logs", str(log),
                          "--one_shot", "--one_shot_format", "prometheus", "--logtostderr"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    found = {}
    for m in re.finditer(r'^gourmetgram_nginx_upstream_(\w+)_total\{.*upstream="([^"]+)"\} (\S+)$',
                         out.stdout, re.M):
        found[(m.group(1), m.group(2))] = float(m.group(3))
    return found


def test_tries_and_failures_per_server(tmp_path):
    post = "POST /api/predict HTTP/1.1"
    got = counters(tmp_path, [
        LINE.format(req=post, status=200, up=P, us=200),
        LINE.format(req=post, status=200, up=f"{C}, {P}", us="504, 200"),  # canary timed out
        LINE.format(req=post, status=200, up=f"{C}, {P}", us="502, 200"),  # canary refused
        LINE.format(req=post, status=502, up=C, us=502),  # no retry left
        LINE.format(req=post, status=500, up=C, us=500),  # an answer, not an upstream failure
        LINE.format(req=post, status=504, up=f"{P}, {C}", us="504, 504"),
        LINE.format(req="GET /api/healthz HTTP/1.1", status=200, up=C, us=200),  # not judged
    ])
    assert got == {("tries", P): 4, ("failures", P): 1, ("tries", C): 5, ("failures", C): 4}


def test_mtail_defaults_file_reads_the_site_log_on_the_bind_address():
    stack = load_stack({"bind_address": "10.0.0.5"})
    text = render("nginx/mtail.default.j2",
                  {**stack.template_data(), "layout": host_layout({}).template_data()})
    assert "LOGS=/var/log/nginx/gourmetgram-access.log\n" in text
    assert "HOST=10.0.0.5\n" in text and f"PORT={stack.mtail_port}\n" in text
