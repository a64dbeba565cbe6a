"""A whole canary stack for tests: two real API processes, a real Nginx master running
the rendered site, and the on-host layout in a temp folder.

The page at ``/`` is the real web app, calling the API through this Nginx as on a host.
"""

from __future__ import annotations

import base64
import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests

from gourmetgram.canary import routing as canary
from gourmetgram.host.configs import render_standalone
from gourmetgram.host.layout import HostLayout, host_layout
from gourmetgram.host.stack import VARIANTS, StackConfig, load_stack
from gourmetgram.load import LoadRun, LoadSpec, Payloads, Phase, status_label
from tests.images import photo_bytes
from tests.procs import ApiServer, Proc, WebServer, free_port


def make_layout(root: Path) -> HostLayout:
    env = {
        "GOURMETGRAM_ETC_DIR": str(root / "etc"),
        "GOURMETGRAM_STATE_DIR": str(root / "state"),
        "GOURMETGRAM_NGINX_SITE": str(root / "nginx" / "sites-enabled" / "gourmetgram.conf"),
        "GOURMETGRAM_NGINX_LOG_DIR": str(root / "nginx" / "log"),
        "GOURMETGRAM_TEXTFILE_DIR": str(root / "textfile"),
    }
    layout = host_layout(env)
    for d in (layout.etc_dir, layout.state_dir, layout.nginx_site.parent, layout.nginx_log_dir,
              layout.textfile_dir):
        d.mkdir(parents=True, exist_ok=True)
    return layout


def stack_data(model: Path, **overrides) -> StackConfig:
    """Stack data on free loopback ports, both variants on the given model file."""
    data = {
        "bind_address": "127.0.0.1", "public_address": "127.0.0.1",
        "nginx_port": free_port(), "web_port": free_port(), "nginx_status_port": free_port(),
        "grafana_port": free_port(),
        "api_ports": {"production": free_port(), "canary": free_port()},
        "api_workers": 1,
        "models": {"production": {"path": str(model), "version": "v1"},
                   "canary": {"path": str(model), "version": "v2"}},
    }
    data.update(overrides)
    return load_stack(data)


def read_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k] = v
    return out


class NginxMaster:
    """Our own Nginx master (daemon off) on the standalone wrapper around the live site."""

    def __init__(self, root: Path, layout: HostLayout):
        self.prefix = root / "nginx"
        self.conf = self.prefix / "nginx.conf"
        self.pid_file = self.prefix / "nginx.pid"
        self.error_log = self.prefix / "log" / "error.log"
        user = "root" if os.geteuid() == 0 else ""
        self.conf.write_text(render_standalone(layout.nginx_site, self.prefix, nginx_user=user))
        self.globals = f"pid {self.pid_file}; error_log {self.error_log} warn;"
        self.layout = layout
        self.proc: Proc | None = None

    def argv(self, *extra: str) -> list[str]:
        return [str(self.layout.nginx_bin), "-c", str(self.conf), "-p", str(self.prefix), *extra]

    def start(self, ready_url: str) -> None:
        self.proc = Proc(self.argv("-g", "daemon off; " + self.globals), self.prefix / "master.log")
        self.proc.wait_http(ready_url, timeout=20)

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()


@dataclass
class LocalServices:
    """canary.Services for the test stack: our Nginx master and our API processes."""

    stack: CanaryStack
    calls: list[str] = field(default_factory=list)

    def check_nginx(self) -> None:
        self.calls.append("check")
        canary._run(self.stack.nginx.argv("-t", "-q", "-g", self.stack.nginx.globals), "nginx -t")

    def reload_nginx(self) -> None:
        self.calls.append("reload")
        os.kill(self.stack.nginx.proc.pid, signal.SIGHUP)

    def restart_api(self, variant: str) -> None:
        self.calls.append(f"restart {variant}")
        self.stack.restart_api(variant)


class CanaryStack:
    """``canary_server(root, model, port, version)``, when set, makes the canary's API
    instance (a bad canary, tests/canary_faults.py) instead of a plain ApiServer; it is
    read at every (re)start, so it can change between ships."""

    def __init__(self, root: Path, model: Path, canary_server=None, **overrides):
        self.root = root
        self.canary_server = canary_server
        self.layout = make_layout(root)
        self.stack = stack_data(model, **overrides)
        self.apis: dict[str, ApiServer] = {}
        self.web: WebServer | None = None
        self.nginx = NginxMaster(root, self.layout)
        self.services = LocalServices(self)
        self.url = f"http://127.0.0.1:{self.stack.nginx_port}"
        self.status_url = f"http://127.0.0.1:{self.stack.nginx_status_port}"

    def start(self) -> CanaryStack:
        canary.initialise(self.stack, self.layout)
        for v in VARIANTS:
            self.apis[v] = self._api(v)
        self.web = WebServer(self.root, f"{self.url}/api", port=self.stack.web_port)
        self.nginx.layout.nginx_site.write_text(canary.render_site(self.stack, self.layout))
        self.nginx.start(self.status_url + "/gourmetgram-canary")
        for api in self.apis.values():
            api.wait_ready()
        self.web.wait_ready()
        return self

    def _api(self, variant: str) -> ApiServer:
        env = read_env(self.layout.env_file(variant))
        if variant == "canary" and self.canary_server is not None:
            return self.canary_server(self.root, Path(env["FOOD11_MODEL"]), int(env["FOOD11_PORT"]),
                                      env["FOOD11_MODEL_VERSION"])
        return ApiServer(self.root, Path(env["FOOD11_MODEL"]), variant=variant, workers=1,
                         port=int(env["FOOD11_PORT"]),
                         extra_args=["--model-version", env["FOOD11_MODEL_VERSION"]],
                         env={"FOOD11_SHADOW_DIR": env["FOOD11_SHADOW_DIR"]})

    def restart_api(self, variant: str) -> None:
        self.apis[variant].stop()
        self.apis[variant] = self._api(variant).wait_ready()

    def set_weight(self, weight: int, reason: str = "test") -> StackConfig:
        return canary.set_weight(weight, reason, layout=self.layout, services=self.services)

    def cli_env(self) -> dict[str, str]:
        """Environment for `python -m gourmetgram canary ...` against this stack's layout."""
        return {
            "GOURMETGRAM_ETC_DIR": str(self.layout.etc_dir),
            "GOURMETGRAM_STATE_DIR": str(self.layout.state_dir),
            "GOURMETGRAM_NGINX_SITE": str(self.layout.nginx_site),
            "GOURMETGRAM_NGINX_LOG_DIR": str(self.layout.nginx_log_dir),
            "GOURMETGRAM_TEXTFILE_DIR": str(self.layout.textfile_dir),
        }

    def __enter__(self) -> CanaryStack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        for part in (self.nginx, self.web, *self.apis.values()):
            if part is not None:
                try:
                    part.stop()
                except Exception:  # noqa: BLE001 - stop the rest regardless
                    pass


def variant_of(r: requests.Response) -> str:
    return r.headers.get("x-model-variant", f"HTTP {r.status_code}")


BODY = {"image": base64.b64encode(photo_bytes()).decode()}


def predict(session: requests.Session, url: str, **headers) -> requests.Response:
    return session.post(url + "/api/predict", json=BODY, headers=headers, timeout=30)


def served_by(session: requests.Session, url: str) -> str:
    """The variant that answered GET /api/healthz (it names itself in the body)."""
    r = session.get(url + "/api/healthz", timeout=30)
    return r.json()["variant"] if r.status_code == 200 else f"HTTP {r.status_code}"


def count_variants(url: str, n: int, clients: int = 4, cheap: bool = False) -> Counter:
    """``n`` requests from ``clients`` concurrent sessions; variant -> count. Predictions
    (variant from the X-Model-Variant header) unless ``cheap``: then /api/healthz, which
    takes the same route through Nginx without a forward pass."""
    def run(k: int) -> Counter:
        c: Counter = Counter()
        with requests.Session() as s:
            # One connection per request: a keep-alive connection opened on an old Nginx
            # worker just before a reload can be closed by it while the next request is
            # on its way (plain HTTP keep-alive behaviour, not a routing failure); the
            # zero-downtime tests (Load) keep their keep-alive clients on purpose.
            s.headers["Connection"] = "close"
            for _ in range(k):
                c[served_by(s, url) if cheap else variant_of(predict(s, url))] += 1
        return c

    share = [n // clients + (1 if i < n % clients else 0) for i in range(clients)]
    with ThreadPoolExecutor(clients) as ex:
        return sum(ex.map(run, share), Counter())


class Load:
    """Closed-loop keep-alive clients posting predictions until stopped: the product's load
    generator (gourmetgram.load), which, like a browser, sends a request once more when a
    reloading Nginx closed its connection without an answer (docs/load.md)."""

    def __init__(self, url: str, clients: int = 4):
        self.run = LoadRun(LoadSpec(
            url=url + "/api/predict", phases=[Phase(None, clients)],
            payloads=Payloads.image(photo_bytes()), scenario="test", timeout=30, max_duration=600))

    def __enter__(self) -> Load:
        self.run.start()
        return self

    def __exit__(self, *exc) -> None:
        self.run.stop()
        self.run.wait(40)

    @property
    def results(self) -> Counter:
        """The answering variant per successful request, else the status or the error."""
        return Counter(r.variant if r.status == 200 else status_label(r)
                       for r in self.run.result().records)

    @property
    def failures(self) -> list[str]:
        return [f"{status_label(r)} {r.variant}" for r in self.run.result().records
                if r.status != 200]

    def total(self) -> int:
        return len(self.run.result().records)

    def wait_for(self, n: int, timeout: float = 60) -> None:
        """Until ``n`` more requests completed (no sleeps guessing the rate)."""
        target = self.total() + n
        deadline = time.monotonic() + timeout
        while self.total() < target:
            assert time.monotonic() < deadline, f"load stalled at {self.results}"
            time.sleep(0.02)


