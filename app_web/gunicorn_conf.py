"""gunicorn configuration, read from the same settings as the app (``WEB_*``).

``gourmetgram serve-web`` points gunicorn here. Threaded workers, so a slow model
API call holds one thread, not a whole worker; the hooks keep prometheus_client's
multiprocess directory right: emptied when the master starts, dead workers marked.
"""

from app_web.settings import WebSettings
from gourmetgram.gunicorn_hooks import (  # noqa: F401 (gunicorn reads the hooks)
    child_exit,
    on_starting,
    server_settings,
)

_settings = WebSettings()

globals().update(server_settings(_settings, "gourmetgram-web"))
worker_class = "gthread"
threads = _settings.threads
