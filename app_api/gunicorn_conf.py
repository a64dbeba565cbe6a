"""gunicorn configuration, read from the same settings as the app (``FOOD11_*``).

``gourmetgram serve-api`` points gunicorn here; the hooks keep prometheus_client's
multiprocess directory right: emptied when the master starts, dead workers marked.
"""

import os
from pathlib import Path

from app_api.settings import ApiSettings

_settings = ApiSettings()

bind = [f"{_settings.host}:{_settings.port}"]
workers = _settings.workers
worker_class = "uvicorn_worker.UvicornWorker"
timeout = _settings.timeout
graceful_timeout = 20
keepalive = 5
# Restarting a worker now and then bounds any slow leak without dropping requests.
max_requests = 20000
max_requests_jitter = 2000
loglevel = _settings.log_level
accesslog = None
proc_name = f"food11-api-{_settings.variant}"


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
