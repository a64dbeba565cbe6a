"""``serve-web``: the GourmetGram web app under gunicorn."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from gourmetgram.commands.options import settings_from_options
from gourmetgram.errors import UsageError

OPTION_ENV = (
    ("host", "WEB_HOST"),
    ("port", "WEB_PORT"),
    ("api_url", "WEB_API_URL"),
    ("workers", "WEB_WORKERS"),
    ("threads", "WEB_THREADS"),
    ("metrics_dir", "WEB_METRICS_DIR"),
    ("upload_dir", "WEB_UPLOAD_DIR"),
)


def settings_from_args(args: argparse.Namespace):
    """Options override the environment; the result is validated as one object."""
    from app_web.settings import WebSettings

    settings = settings_from_options(args, OPTION_ENV, WebSettings)
    if not settings.test_image.is_file():
        raise UsageError(f"test image {settings.test_image} does not exist")
    return settings


def cmd_serve_web(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    metrics_dir = settings.metrics_dir or Path(
        os.environ.get("RUNTIME_DIRECTORY")
        or Path(tempfile.gettempdir()) / f"gourmetgram-metrics-web-{settings.port}"
    )
    metrics_dir.mkdir(parents=True, mode=0o700, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    argv = [
        sys.executable, "-m", "gunicorn",
        "-c", "python:app_web.gunicorn_conf",
        "app_web.app:create_app()",
    ]
    os.execv(sys.executable, argv)
    return 0  # not reached


def register(sub) -> None:
    s = sub.add_parser(
        "serve-web",
        help="run the GourmetGram web app (gunicorn, threaded workers)",
        description="Options override the WEB_* environment settings (see docs/web.md).",
    )
    s.add_argument("--host", help="bind address (WEB_HOST, default 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (WEB_PORT, default 5000)")
    s.add_argument(
        "--api-url",
        help="model API base URL (WEB_API_URL or the lab's FASTAPI_SERVER_URL, "
        "default http://127.0.0.1:8000)",
    )
    s.add_argument("--workers", type=int, help="gunicorn workers (WEB_WORKERS, default 2)")
    s.add_argument("--threads", type=int, help="threads per worker (WEB_THREADS, default 4)")
    s.add_argument("--metrics-dir", help="WEB_METRICS_DIR (multiprocess metrics)")
    s.add_argument("--upload-dir", help="keep uploads here under generated names (WEB_UPLOAD_DIR)")
    s.set_defaults(func=cmd_serve_web)
