"""The Host header, checked before an app reads it: a well-formed name or address
(labels of at most 63 characters, 253 in all, an optional port) or a 400. Without this,
a 64-character label makes Werkzeug's URL adapter fail and the web app answer 500."""

from __future__ import annotations

import re

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST = re.compile(
    rf"(?:{_LABEL}(?:\.{_LABEL})*\.?|\[[0-9A-Fa-f:.]{{2,45}}\])(?::[0-9]{{1,5}})?"
)
BODY = b'{"detail":"bad Host header: give a host name or address (and port)"}'


def valid_host(value: str) -> bool:
    """A missing Host is valid (HTTP/1.0); servers answer with their own name then."""
    if not value:
        return True
    name = value.rsplit(":", 1)[0] if not value.endswith("]") else value
    return len(name) <= 253 and _HOST.fullmatch(value) is not None


def _headers() -> list[tuple[str, str]]:
    return [("Content-Type", "application/json"), ("Content-Length", str(len(BODY))),
            ("Connection", "close")]


class HostCheckWSGI:
    """WSGI middleware: a bad Host is answered 400 before Flask builds its URL adapter."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if not valid_host(environ.get("HTTP_HOST", "")):
            start_response("400 Bad Request", _headers())
            return [BODY]
        return self.app(environ, start_response)


class HostCheckASGI:
    """ASGI middleware: the same check for the model API."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            host = next((v for k, v in scope.get("headers", ()) if k == b"host"), b"")
            if not valid_host(host.decode("latin-1")):
                headers = [(k.lower().encode(), v.encode()) for k, v in _headers()]
                await send({"type": "http.response.start", "status": 400, "headers": headers})
                await send({"type": "http.response.body", "body": BODY})
                return
        await self.app(scope, receive, send)
