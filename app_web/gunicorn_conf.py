"""gunicorn configuration, read from the same settings as the app (``WEB_*``).

``gourmetgram serve-web`` points gunicorn here. Threaded workers, so a slow model
API call holds one thread, not a whole worker; the hooks keep prometheus_client's
multiprocess directory right: emptied when the master starts, dead workers marked.
"""

from app_web.settings import WebSettings
from gourmetgram.gunicorn_hooks import child_exit, on_starting  # noqa: F401 (gunicorn reads them)

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
