"""GourmetGram web app: the upload page end users see, in front of the model API."""


def __getattr__(name):
    # Lazy, so gunicorn's master (which reads app_web.settings) never creates metrics.
    if name == "create_app":
        from app_web.app import create_app

        return create_app
    raise AttributeError(name)


__all__ = ["create_app"]
