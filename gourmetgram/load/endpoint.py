"""Where to send the load: a model API's /predict or the stack's /api/predict."""

from __future__ import annotations

import requests


class EndpointError(ValueError):
    """The URL does not lead to a model API (the message says why, in one line)."""


def _looks_like_api(resp: requests.Response) -> bool:
    try:
        body = resp.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "ready" in body


def resolve_endpoint(url: str, path: str | None = None, timeout: float = 5.0) -> str:
    """The predict endpoint for ``url``: the URL itself when it has a path, ``url + path``
    when ``path`` is given, else ``/predict`` when ``url`` is one API instance (its
    ``/readyz`` answers) or ``/api/predict`` behind the Nginx front (``/api/readyz``)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EndpointError(f"--url {url!r} is not an http(s) URL such as http://127.0.0.1:8000")
    try:
        parts.port  # noqa: B018 - raises on a bad port number
    except ValueError:
        raise EndpointError(f"--url {url!r} has a bad port") from None
    base = f"{parts.scheme}://{parts.netloc}"
    given = path if path is not None else (parts.path if parts.path not in ("", "/") else None)
    candidates = [given] if given is not None else ["/predict", "/api/predict"]
    last_error = ""
    for cand in candidates:
        cand = "/" + cand.lstrip("/")
        prefix = cand.rsplit("/", 1)[0]
        try:
            resp = requests.get(base + prefix + "/readyz", timeout=timeout)
        except requests.RequestException as e:
            reason = "timed out" if isinstance(e, requests.Timeout) else "connection failed"
            raise EndpointError(f"cannot reach {base}: {reason}") from None
        if given is not None:
            return base + cand  # reachable; the user named the endpoint
        if resp.status_code == 200 and _looks_like_api(resp):
            return base + cand
        last_error = f"{prefix or ''}/readyz answered {resp.status_code}"
    raise EndpointError(
        f"no model API at {base} (neither /readyz nor /api/readyz is the API's; {last_error}); "
        "give the endpoint with --path"
    )


