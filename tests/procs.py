"""Starting and stopping real processes for tests: each runs in its own process
group on a free loopback port, is polled until ready (no sleeps), and is killed with
its whole group at teardown, also when the test fails."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
    """The test's environment with this checkout first on the import path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env.update(extra)
    return env


class Proc:
    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None):
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.popen = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env or child_env(),
            cwd=cwd or REPO_ROOT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_until(self, ready: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        delay = 0.05
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"{self.argv[:4]} exited with {self.popen.returncode}:\n{self.log()[-3000:]}"
                )
            try:
                if ready():
                    return
            except (requests.RequestException, OSError):
                pass
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        raise TimeoutError(f"{what or self.argv[:4]} not ready after {timeout}s:\n{self.log()[-3000:]}")

    def wait_http(self, url: str, timeout: float = 60.0) -> None:
        self.wait_until(lambda: requests.get(url, timeout=2).status_code == 200, timeout, url)

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait()
        self._log.close()


class ApiServer:
    """A real ``gourmetgram serve-api`` (gunicorn + uvicorn workers)."""

    def __init__(self, tmp: Path, model: Path, variant: str = "production", workers: int = 1,
                 port: int | None = None, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.variant = variant
        metrics_dir = tmp / f"metrics-{variant}-{self.port}"
        argv = [
            sys.executable, "-m", "gourmetgram", "serve-api",
            "--host", "127.0.0.1", "--port", str(self.port), "--variant", variant,
            "--model", str(model), "--workers", str(workers), "--device", "cpu",
            "--metrics-dir", str(metrics_dir), *(extra_args or []),
        ]
        # Each instance its own state (the bootstrapped drift reference), unless told.
        env = {"FOOD11_STATE_DIR": str(tmp / f"state-{variant}-{self.port}"), **(env or {})}
        self.proc = Proc(argv, tmp / f"api-{variant}-{self.port}.log", env=child_env(**env))

    def wait_ready(self, timeout: float = 90.0) -> ApiServer:
        self.proc.wait_http(self.url + "/readyz", timeout)
        return self

    def stop(self) -> None:
        self.proc.stop()


class WebServer:
    """A real ``gourmetgram serve-web`` (gunicorn) on ``port`` (a free one by default)."""

    def __init__(self, tmp: Path, api_url: str, workers: int = 1, env: dict | None = None,
                 port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.metrics_dir = tmp / f"web-metrics-{self.port}"
        argv = [
            sys.executable, "-m", "gourmetgram", "serve-web", "--host", "127.0.0.1",
            "--port", str(self.port), "--api-url", api_url, "--workers", str(workers),
            "--metrics-dir", str(self.metrics_dir),
        ]
        self.proc = Proc(argv, tmp / f"web-{self.port}.log", env=child_env(**(env or {})))

    def wait_ready(self) -> WebServer:
        self.proc.wait_http(self.url + "/healthz", timeout=60)
        return self

    def stop(self) -> None:
        self.proc.stop()


def server_factory(make):
    """For a fixture: yields ``start(...)`` that makes a server with ``make(...)`` and
    returns it ready; every server it started is stopped afterwards, also on failure."""
    servers = []

    def start(*args, **kw):
        server = make(*args, **kw)
        servers.append(server)
        return server.wait_ready()

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
