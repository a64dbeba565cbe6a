"""gunicorn server hooks shared by the API and the web app: keep prometheus_client's
multiprocess directory right, so a scrape sums exactly the live and dead workers of
this run (emptied when the master starts, each dead worker marked)."""

import os
from pathlib import Path


def on_starting(server):
    d = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if d:
        path = Path(d)
        path.mkdir(parents=True, mode=0o700, exist_ok=True)
        for old in path.glob("*.db"):
            old.unlink()


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def server_settings(settings, proc_name: str) -> dict:
    """The gunicorn settings the API and the web app share, from their settings object
    (``host``, ``port``, ``workers``, ``timeout``, ``log_level``)."""
    return {
        "bind": [f"{settings.host}:{settings.port}"],
        "workers": settings.workers,
        "timeout": settings.timeout,
        "graceful_timeout": 20,
        "keepalive": 5,
        # Restarting a worker now and then bounds any slow leak without dropping requests.
        "max_requests": 20000,
        "max_requests_jitter": 2000,
        "loglevel": settings.log_level,
        "accesslog": None,
        "proc_name": proc_name,
    }
