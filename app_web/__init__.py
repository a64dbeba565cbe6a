"""GourmetGram web app: the upload page end users see, in front of the model API."""

from app_web.app import create_app

__all__ = ["create_app"]
