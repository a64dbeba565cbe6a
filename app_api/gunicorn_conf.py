"""gunicorn configuration, read from the same settings as the app (``FOOD11_*``).

``gourmetgram serve-api`` points gunicorn here; the hooks keep prometheus_client's
multiprocess directory right: emptied when the master starts, dead workers marked.
"""

from app_api.settings import ApiSettings
from gourmetgram.gunicorn_hooks import (  # noqa: F401 (gunicorn reads the hooks)
    child_exit,
    on_starting,
    server_settings,
)
from gourmetgram.gunicorn_workers import uvicorn_worker

_settings = ApiSettings()

globals().update(server_settings(_settings, f"food11-api-{_settings.variant}"))
# uvicorn, with a deadline on each request's headers (gourmetgram.gunicorn_workers).
worker_class = uvicorn_worker(_settings.header_timeout)
reuse_port = _settings.reuse_port
