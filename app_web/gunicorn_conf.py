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
from gourmetgram.gunicorn_workers import thread_worker

_settings = WebSettings()

globals().update(server_settings(_settings, "gourmetgram-web"))
# gthread whose main loop reads each request's headers, with a deadline, before a thread
# gets the connection (gourmetgram.gunicorn_workers: stalled clients hold no thread).
worker_class = thread_worker(_settings.header_timeout)
threads = _settings.threads
