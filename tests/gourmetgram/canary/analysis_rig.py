"""A real canary set-up for the controller tests: Debian's Prometheus scraping real
API instances every second, a real Nginx splitting /api/ between them by weight
(reloaded, never restarted, on every change), and a threaded client driving traffic
through Nginx.

``NginxActuator`` stands in for the canary routing library's set_weight / promote /
rollback (developed on its own branch) at the controller's one seam: it rewrites the
upstream weights and reloads Nginx the same way. Its ``promote`` points the production
upstream at the canary instance (the routing library restarts the production
instance onto the canary's model instead; that path is tested with the library).
"""

from __future__ import annotations

import collections
import os
import random
import shutil
import signal
import threading
import time
from pathlib import Path

import requests

from tests.images import b64, encode, textured
from tests.procs import Proc, free_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


class PrometheusServer:
    """Debian's Prometheus with a 1 s scrape of job ``food11`` (label ``variant``)."""

    def __init__(self, tmp: Path, targets: dict[str, str], scrape_s: float = 1.0):
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = tmp / "prom-data"
        statics = "\n".join(
            f"      - targets: ['{addr}']\n        labels: {{variant: {variant}}}"
            for variant, addr in targets.items()
        )
        self.config = tmp / "prometheus.yml"
        every = f"{round(scrape_s * 1000)}ms"
        self.config.write_text(
            f"global:\n  scrape_interval: {every}\n  evaluation_interval: {every}\n"
            f"scrape_configs:\n  - job_name: food11\n    scrape_timeout: {every}\n"
            f"    static_configs:\n{statics}\n"
        )
        self.proc: Proc | None = None
        self.starts = 0

    def start(self) -> PrometheusServer:
        self.starts += 1
        self.proc = Proc(
            [PROMETHEUS, f"--config.file={self.config}", f"--storage.tsdb.path={self.data}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            self.tmp / f"prometheus-{self.starts}.log",
        )
        self.proc.wait_http(self.url + "/-/ready", timeout=60)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def wait_for_series(self, expr: str, n: int, timeout: float = 60.0) -> None:
        """Polls until ``expr`` returns at least ``n`` series (targets scraped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                r = requests.get(self.url + "/api/v1/query", params={"query": expr}, timeout=5)
                if len(r.json()["data"]["result"]) >= n:
                    return
            except (requests.RequestException, ValueError, KeyError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"Prometheus never returned {n} series for {expr}")


class NginxSplit:
    """Nginx with an upstream of production and canary weighted by the canary weight."""

    def __init__(self, tmp: Path, production: str, canary: str):
        self.dir = tmp / "nginx"
        self.dir.mkdir(exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.production, self.canary = production, canary
        self.weight = 0
        self.reloads = 0
        self.proc: Proc | None = None

    def _servers(self) -> str:
        if self.weight <= 0:
            return f"server {self.production};"
        if self.weight >= 100:
            return f"server {self.canary};"
        return (f"server {self.production} weight={100 - self.weight};\n"
                f"    server {self.canary} weight={self.weight};")

    def _write(self) -> None:
        d = self.dir
        conf = f"""
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 512; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  client_max_body_size 8m;
  client_body_buffer_size 1m;
  upstream api {{
    {self._servers()}
    keepalive 16;
  }}
  server {{
    listen 127.0.0.1:{self.port};
    location = /__split {{ return 200 "{self.weight} {self.production}"; }}
    location /api/ {{
      proxy_pass http://api/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_read_timeout 60s;
    }}
  }}
}}
"""
        tmp = d / "nginx.conf.new"
        tmp.write_text(conf)
        tmp.replace(d / "nginx.conf")

    def _applied(self) -> bool:
        r = requests.get(self.url + "/__split", timeout=2)
        return r.text == f"{self.weight} {self.production}"

    def start(self) -> NginxSplit:
        self._write()
        self.proc = Proc([NGINX, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"),
                          "-g", "daemon off;"], self.dir / "stdout.log")
        self.proc.wait_until(self._applied, 30, "nginx")
        return self

    def apply(self, weight: int, production: str | None = None) -> None:
        """Rewrites the config, reloads Nginx (SIGHUP) and waits until it serves it."""
        self.weight = weight
        if production:
            self.production = production
        self._write()
        self.reloads += 1
        os.kill(self.proc.pid, signal.SIGHUP)
        self.proc.wait_until(self._applied, 30, "nginx reload")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


class NginxActuator:
    """The controller's actuator over ``NginxSplit`` (see the module docstring)."""

    def __init__(self, nginx: NginxSplit):
        self.nginx = nginx
        self.events: list[tuple[str, int, str]] = []

    def weight(self) -> int:
        return self.nginx.weight

    def set_weight(self, weight: int, reason: str) -> None:
        self.events.append(("set_weight", weight, reason))
        self.nginx.apply(weight)

    def promote(self, reason: str) -> None:
        self.events.append(("promote", 0, reason))
        self.nginx.apply(0, production=self.nginx.canary)

    def rollback(self, reason: str) -> None:
        self.events.append(("rollback", 0, reason))
        self.nginx.apply(0)


def image_pool(n: int = 12, bright_every: int = 0) -> list[str]:
    """Base64 JPEGs; with ``bright_every`` k, every k-th image is near-white (the
    faulty test model fails on those)."""
    out = []
    for i in range(n):
        im = textured((256, 256), seed=100 + i)
        if bright_every and i % bright_every == 0:
            im = im.point(lambda v: 235 + v // 16)
        out.append(b64(encode(im, quality=85)))
    return out


class Traffic:
    """Closed-loop clients posting to Nginx's /api/predict until stopped, counting
    answers by variant and status. ``pause_s`` between requests makes low traffic."""

    def __init__(self, url: str, images: list[str], clients: int = 3, pause_s: float = 0.0):
        self.url = url + "/api/predict"
        self.images = images
        self.clients = clients
        self.pause_s = pause_s
        self.counts: collections.Counter = collections.Counter()
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []

    def _loop(self, k: int) -> None:
        s = requests.Session()
        pick = random.Random(k)
        deadline = time.monotonic() + 600  # bounded even if a test forgets to stop it
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            body = {"image": pick.choice(self.images)}
            try:
                r = s.post(self.url, json=body, timeout=30)
                key = (r.headers.get("X-Model-Variant", "?"), r.status_code)
                if r.status_code != 200:
                    with self.lock:
                        self.failures.append(f"{r.status_code} {r.text[:80]}")
            except requests.RequestException as e:
                key = ("?", type(e).__name__)
                with self.lock:
                    self.failures.append(str(e)[:120])
            with self.lock:
                self.counts[key] += 1
            if self.pause_s:
                self.stop_event.wait(self.pause_s)

    def start(self) -> Traffic:
        for k in range(self.clients):
            t = threading.Thread(target=self._loop, args=(k,), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(40)

    def total(self) -> int:
        with self.lock:
            return sum(self.counts.values())
