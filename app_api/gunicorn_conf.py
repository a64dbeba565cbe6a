"""gunicorn configuration, read from the same settings as the app (``FOOD11_*``).

``gourmetgram serve-api`` points gunicorn here; the hooks keep prometheus_client's
multiprocess directory right: emptied when the master starts, dead workers marked.
"""

from app_api.settings import ApiSettings
from gourmetgram.gunicorn_hooks import child_exit, on_starting  # noqa: F401 (gunicorn reads them)

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
