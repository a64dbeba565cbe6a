"""Two real API instances (production, canary) behind a real Nginx, for the load
generator's tests. The nginx.conf here is a minimal test-only config with two weighted
upstream servers; the deployed site comes from nginx/gourmetgram.conf.j2 (canary
routing), which these tests do not depend on."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.procs import ApiServer, Proc, free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

NGINX_CONF = """\
{user}worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    client_max_body_size 20m;
    client_body_buffer_size 2m;
    upstream food11 {{
        server 127.0.0.1:{production} weight={w_production};
        server 127.0.0.1:{canary} weight={w_canary};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location /api/ {{
            proxy_pass http://food11/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


class Nginx:
    def __init__(self, tmp: Path, production: int, canary: int, weights=(3, 1)):
        tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = tmp / "nginx.conf"
        conf.write_text(NGINX_CONF.format(
            # As root, workers would run as nobody and could not enter pytest's 0700 temp dir.
            user="user root;\n" if os.geteuid() == 0 else "",
            tmp=tmp, port=self.port, production=production, canary=canary,
            w_production=weights[0], w_canary=weights[1],
        ))
        self.proc = Proc([NGINX, "-p", str(tmp), "-c", str(conf)], tmp / "nginx.out")

    def wait_ready(self) -> Nginx:
        self.proc.wait_http(self.url + "/api/readyz", timeout=20)
        return self

    def stop(self) -> None:
        self.proc.stop()


class TwoVariants:
    """production (weight 3) and canary (weight 1) API instances behind Nginx."""

    def __init__(self, tmp: Path, model: Path):
        self.production = ApiServer(tmp, model, variant="production", workers=1)
        self.canary = ApiServer(tmp, model, variant="canary", workers=1,
                                extra_args=["--model-version", "canary-2"])
        self.nginx: Nginx | None = None
        try:
            self.production.wait_ready()
            self.canary.wait_ready()
            self.nginx = Nginx(tmp / "nginx", self.production.port, self.canary.port).wait_ready()
        except BaseException:
            self.stop()
            raise

    @property
    def apis(self) -> list[ApiServer]:
        return [self.production, self.canary]

    def stop(self) -> None:
        for p in (self.nginx, self.production, self.canary):
            if p is not None:
                p.stop()


def predict_counts(api_url: str) -> dict[str, float]:
    """The server's own count of POST /predict by status class (http_requests_total)."""
    text = requests.get(api_url + "/metrics", timeout=5).text
    counts = {"2xx": 0.0, "4xx": 0.0, "5xx": 0.0}
    for fam in text_string_to_metric_families(text):
        if fam.name != "http_requests":
            continue
        for s in fam.samples:
            if (s.name == "http_requests_total" and s.labels.get("handler") == "/predict"
                    and s.labels.get("method") == "POST"):
                counts[s.labels["status"]] = counts.get(s.labels["status"], 0.0) + s.value
    return counts


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    return {k: round(after.get(k, 0) - before.get(k, 0)) for k in after}


def settled(read, expect_total: int, timeout: float = 5.0):
    """``read()`` once its total reaches ``expect_total`` (or after ``timeout``): the server
    counts a request just after sending its response, so a read can be a hair early."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if _total(value) >= expect_total or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def _total(value) -> float:
    if isinstance(value, dict):
        return sum(_total(v) for v in value.values())
    return value
