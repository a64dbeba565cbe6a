"""gunicorn configuration, read from the same settings as the app (``WEB_*``).

``gourmetgram serve-web`` points gunicorn here. Threaded workers, so a slow model
API call holds one thread, not a whole worker; the hooks keep prometheus_client's
multiprocess directory right: emptied when the master starts, dead workers marked.
"""

import os
from pathlib import Path

from app_web.settings import WebSettings

_settings = WebSettings()

bind = [f"{_settings.host}:{_settings.port}"]
workers = _settings.workers
worker_class = "gthread"
threads = _settings.threads
timeout = _settings.timeout
graceful_timeout = 20
keepalive = 5
max_requests = 20000
max_requests_jitter = 2000
loglevel = _settings.log_level
accesslog = None
proc_name = "gourmetgram-web"


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
