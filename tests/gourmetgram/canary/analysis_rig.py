"""Parts for the controller tests beside tests/canary_stack.py (real APIs, the
product's Nginx site, the real routing library): Debian's Prometheus scraping the
API instances every second, and a threaded client driving traffic through Nginx."""

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
from tests.procs import REPO_ROOT, Proc, free_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
MTAIL = shutil.which("mtail") or "/usr/bin/mtail"


class PrometheusServer:
    """Debian's Prometheus with a 1 s scrape of job ``food11`` (label ``variant``)."""

    def __init__(self, tmp: Path, targets: dict[str, str], scrape_s: float = 1.0,
                 jobs: dict[str, str] | None = None):
        """``targets``: variant -> API address (job food11); ``jobs``: other job name ->
        address (mtail, canary-analysis)."""
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
        others = "".join(
            f"  - job_name: {job}\n    scrape_timeout: {every}\n"
            f"    static_configs:\n      - targets: ['{addr}']\n"
            for job, addr in (jobs or {}).items()
        )
        self.config.write_text(
            f"global:\n  scrape_interval: {every}\n  evaluation_interval: {every}\n"
            f"scrape_configs:\n  - job_name: food11\n    scrape_timeout: {every}\n"
            f"    static_configs:\n{statics}\n{others}"
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
        # One connection per request (as count_variants in tests/canary_stack.py): every
        # weight change reloads Nginx, and a keep-alive connection that an old worker
        # closes while the next POST is on its way fails with RemoteDisconnected, a race
        # of HTTP keep-alive that the web app's API client retries (app_web/api_client.py)
        # and no routing failure; on the loaded 2-core machine it failed these tests now
        # and then. The stack's own zero-downtime test (Load) keeps its keep-alive clients.
        s.headers["Connection"] = "close"
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


class Mtail:
    """Debian's mtail running the product's program (nginx/mtail/) over the stack's
    Nginx access log, as the deploy runs it."""

    def __init__(self, tmp: Path, access_log: Path):
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.proc = Proc([MTAIL, "--progs", str(REPO_ROOT / "nginx" / "mtail"), "--logs",
                          str(access_log), "--address", "127.0.0.1", "--port", str(self.port),
                          "--logtostderr", "--poll_interval", "250ms"], tmp / "mtail.log")
        self.proc.wait_http(f"http://{self.addr}/metrics", timeout=30)

    def stop(self) -> None:
        self.proc.stop()


class CrashLoop:
    """The canary API crash-looping as under systemd's Restart=: killed (SIGKILL), started
    again, killed again a second after it is ready, until stopped."""

    def __init__(self, stack):
        self.stack = stack
        self.stop_event = threading.Event()
        self.kills = 0
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            api = self.stack.apis["canary"]
            os.killpg(api.proc.pid, signal.SIGKILL)
            api.proc.stop()
            self.kills += 1
            self.stack.apis["canary"] = api = self.stack._api("canary")
            deadline = time.monotonic() + 60
            while not self.stop_event.is_set() and time.monotonic() < deadline:
                try:
                    if requests.get(api.url + "/readyz", timeout=1).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                self.stop_event.wait(0.2)
            self.stop_event.wait(1.0)

    def start(self) -> CrashLoop:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(90)


class ControllerRig:
    """What the controller reads on a test stack: the CanaryStack (tests/canary_stack.py),
    mtail on its Nginx access log, and Prometheus scraping both API instances and mtail
    every second (plus ``jobs``); started in that order, stopped in reverse, also when
    a start fails half-way."""

    def __init__(self, tmp: Path, stack, jobs: dict[str, str] | None = None):
        self.tmp = tmp
        self.stack = stack
        self.jobs = jobs or {}
        self.mtail: Mtail | None = None
        self.prom: PrometheusServer | None = None

    def start(self) -> ControllerRig:
        try:
            self.stack.start()
            self.mtail = Mtail(self.tmp, self.stack.layout.nginx_log_dir / "gourmetgram-access.log")
            ports = self.stack.stack.api_ports
            self.prom = PrometheusServer(self.tmp, {v: f"127.0.0.1:{p}" for v, p in ports.items()},
                                         jobs={"mtail": self.mtail.addr, **self.jobs})
            self.prom.start()
            self.prom.wait_for_series('up{job=~"food11|mtail"} == 1', 3)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for part in (self.prom, self.mtail, self.stack):
            if part is not None:
                part.stop()
