"""A whole canary stack for tests: two real API processes, a real Nginx master running
the rendered site, and the on-host layout in a temp folder.

The only stand-in is the page at ``/``: the web app (another part of the project) is
replaced by a static page served by ``python -m http.server``; the routing under test
does not depend on what the page is.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import requests

from gourmetgram import canary
from gourmetgram.hostconfig import render_standalone
from gourmetgram.hostlayout import HostLayout, host_layout
from gourmetgram.stack import VARIANTS, StackConfig, load_stack
from tests.procs import ApiServer, Proc, free_port


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
    def __init__(self, root: Path, model: Path, **overrides):
        self.root = root
        self.layout = make_layout(root)
        self.stack = stack_data(model, **overrides)
        self.apis: dict[str, ApiServer] = {}
        self.web: Proc | None = None
        self.nginx = NginxMaster(root, self.layout)
        self.services = LocalServices(self)
        self.url = f"http://127.0.0.1:{self.stack.nginx_port}"
        self.status_url = f"http://127.0.0.1:{self.stack.nginx_status_port}"

    def start(self) -> CanaryStack:
        canary.initialise(self.stack, self.layout)
        for v in VARIANTS:
            self.apis[v] = self._api(v)
        www = self.root / "www"
        www.mkdir()
        (www / "index.html").write_text("<!doctype html><title>GourmetGram</title><h1>GourmetGram</h1>")
        self.web = Proc([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                         str(self.stack.web_port)], self.root / "web.log", cwd=www)
        self.nginx.layout.nginx_site.write_text(canary.render_site(self.stack, self.layout))
        self.nginx.start(self.status_url + "/gourmetgram-canary")
        for api in self.apis.values():
            api.wait_ready()
        self.web.wait_http(f"http://127.0.0.1:{self.stack.web_port}/")
        return self

    def _api(self, variant: str) -> ApiServer:
        env = read_env(self.layout.env_file(variant))
        return ApiServer(self.root, Path(env["FOOD11_MODEL"]), variant=variant, workers=1,
                         port=int(env["FOOD11_PORT"]),
                         extra_args=["--model-version", env["FOOD11_MODEL_VERSION"]])

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

    def stop(self) -> None:
        for part in (self.nginx, self.web, *self.apis.values()):
            if part is not None:
                try:
                    part.stop()
                except Exception:  # noqa: BLE001 - stop the rest regardless
                    pass


def variant_of(r: requests.Response) -> str:
    return r.headers.get("x-model-variant", f"HTTP {r.status_code}")
