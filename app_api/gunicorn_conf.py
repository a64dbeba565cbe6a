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

_settings = ApiSettings()

globals().update(server_settings(_settings, f"food11-api-{_settings.variant}"))
worker_class = "uvicorn_worker.UvicornWorker"
reuse_port = _settings.reuse_port
