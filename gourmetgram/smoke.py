"""Smoke checks of a running stack through Nginx, as a user would do them with curl.

Each check is one line: ``ok`` or ``FAIL`` with the reason. ``scripts/smoke.sh`` does
the same with curl for hosts without the Python environment.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from pathlib import Path

import requests

from gourmetgram.host.stack import VARIANTS

TIMEOUT = 30.0


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"


def default_image() -> bytes:
    """A small JPEG made on the spot, so the check needs no file."""
    from PIL import Image

    im = Image.new("RGB", (64, 48))
    im.putdata([((x * 4) % 256, (y * 5) % 256, 128) for y in range(48) for x in range(64)])
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _get(url: str) -> requests.Response:
    return requests.get(url, timeout=TIMEOUT)


def check_page(url: str) -> Check:
    try:
        r = _get(url.rstrip("/") + "/")
    except requests.RequestException as e:
        return Check("page", False, f"GET {url}/ failed: {type(e).__name__}: {e}")
    if r.status_code != 200 or "html" not in r.headers.get("content-type", ""):
        return Check("page", False, f"GET {url}/ answered {r.status_code} {r.headers.get('content-type')}")
    return Check("page", True, f"GET {url}/ answered 200 html")


def check_predict(url: str, image: bytes) -> Check:
    target = url.rstrip("/") + "/api/predict"
    try:
        r = requests.post(target, json={"image": base64.b64encode(image).decode()}, timeout=TIMEOUT)
    except requests.RequestException as e:
        return Check("predict", False, f"POST {target} failed: {type(e).__name__}: {e}")
    try:
        body = r.json()
    except ValueError:
        body = {}
    if r.status_code != 200 or not isinstance(body.get("prediction"), str) or not body["prediction"]:
        return Check("predict", False, f"POST {target} answered {r.status_code}: {r.text[:200]!r}")
    variant = r.headers.get("x-model-variant", "?")
    return Check("predict", True,
                 f"class {body['prediction']!r} ({body.get('probability', 0):.2f}) from {variant} "
                 f"{body.get('model_version')}")


def requests_to_see(weight: int, miss: float = 1e-6) -> int:
    """Requests after which a variant answering ``weight`` percent of them has been seen
    with probability ``1 - miss`` (0 for weights 0 and 100: nothing to look for)."""
    if weight in (0, 100):
        return 0
    return math.ceil(math.log(miss) / math.log(1 - min(weight, 100 - weight) / 100))


def check_split(url: str, image: bytes, requests_n: int, weight: int | None) -> Check:
    """``requests_n`` predictions through the public URL: every one answered, and the
    variants that answered (X-Model-Variant). With the configured ``weight`` known (on
    the host), both variants must show up when both have a share."""
    target = url.rstrip("/") + "/api/predict"
    body = {"image": base64.b64encode(image).decode()}
    seen: dict[str, int] = {}
    with requests.Session() as session:
        for _ in range(requests_n):
            session.cookies.clear()
            try:
                r = session.post(target, json=body, timeout=TIMEOUT, headers={"Connection": "close"})
            except requests.RequestException as e:
                return Check("split", False, f"POST {target} failed: {type(e).__name__}: {e}")
            if r.status_code != 200:
                return Check("split", False, f"POST {target} answered {r.status_code}: {r.text[:200]!r}")
            variant = r.headers.get("x-model-variant", "?")
            seen[variant] = seen.get(variant, 0) + 1
    shares = ", ".join(f"{v} {n}" for v, n in sorted(seen.items()))
    unknown = set(seen) - set(VARIANTS)
    if unknown:
        return Check("split", False, f"{requests_n} answers without a known X-Model-Variant: {shares}")
    if weight is None:
        return Check("split", True, f"{requests_n} predictions answered: {shares}")
    expected = {v for v, share in (("canary", weight), ("production", 100 - weight)) if share}
    missing = expected - set(seen)
    extra = set(seen) - expected
    ok = not missing and not extra
    return Check("split", ok, f"{requests_n} predictions at canary weight {weight}%: {shares}"
                 + (f"; never answered: {sorted(missing)}" if missing else "")
                 + (f"; answered with weight 0: {sorted(extra)}" if extra else ""))


def check_variant(name: str, api: str) -> list[Check]:
    out = []
    try:
        r = _get(api.rstrip("/") + "/readyz")
        body = r.json() if r.status_code == 200 else {}
        ok = body.get("ready") is True and body.get("variant") == name
        out.append(Check(f"{name} ready", ok,
                         f"{api}/readyz answered {r.status_code} {body or r.text[:100]!r}"))
    except (requests.RequestException, ValueError) as e:
        out.append(Check(f"{name} ready", False, f"{api}/readyz failed: {type(e).__name__}: {e}"))
    try:
        r = _get(api.rstrip("/") + "/metrics")
        ok = r.status_code == 200 and "http_requests_total" in r.text
        out.append(Check(f"{name} metrics", ok, f"{api}/metrics answered {r.status_code}"
                         + ("" if ok else " without http_requests_total")))
    except requests.RequestException as e:
        out.append(Check(f"{name} metrics", False, f"{api}/metrics failed: {type(e).__name__}: {e}"))
    return out


def check_stub_status(status_url: str) -> Check:
    try:
        r = _get(status_url)
    except requests.RequestException as e:
        return Check("nginx stub_status", False, f"GET {status_url} failed: {type(e).__name__}: {e}")
    ok = r.status_code == 200 and "Active connections" in r.text
    return Check("nginx stub_status", ok, f"GET {status_url} answered {r.status_code}")


# Predictions the split check sends when the weight is not known (from the controller).
UNKNOWN_WEIGHT_REQUESTS = 60


def smoke(url: str, apis: dict[str, str], status_url: str | None = None,
          image: bytes | None = None, weight: int | None = None) -> list[Check]:
    """All checks; ``apis`` maps variant -> its direct URL (each must be ready). Only
    the public ones (page, predict, split) when ``apis`` is empty."""
    image = image or default_image()
    checks = [check_page(url), check_predict(url, image)]
    n = UNKNOWN_WEIGHT_REQUESTS if weight is None else max(requests_to_see(weight), 20)
    checks.append(check_split(url, image, n, weight))
    for name, api in apis.items():
        checks += check_variant(name, api)
    if status_url:
        checks.append(check_stub_status(status_url))
    return checks


def targets_from_stack(stack_json: Path) -> tuple[dict[str, str], str, int]:
    """The variants' URLs, the stub_status URL and the canary weight from the host's
    stack.json."""
    from gourmetgram.canary.routing import load_state
    from gourmetgram.host.layout import host_layout

    layout = host_layout({"GOURMETGRAM_ETC_DIR": str(stack_json.parent)})
    stack = load_state(layout)
    apis = {v: f"http://{stack.bind_address}:{stack.api_ports[v]}" for v in VARIANTS}
    return apis, f"http://{stack.bind_address}:{stack.nginx_status_port}/stub_status", stack.canary_weight
