"""The web app through Flask's test client, against a real model API process (the
demo model), a closed port, a hung socket, and a stand-in API for the answers a
healthy API never gives (5xx, garbage)."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import requests
from PIL import Image
from prometheus_client import REGISTRY

from app_api.model import FOOD11_CLASSES
from app_web import create_app
from app_web.settings import BUNDLED_TEST_PHOTO as LAB_PHOTO
from app_web.settings import WebSettings
from tests.images import encode, textured
from tests.procs import child_env


def metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def make_client(api_url: str, **settings):
    app = create_app({"api_url": api_url, **settings})
    return app.test_client()


def upload(client, data: bytes, name: str = "photo.jpg", accept: str = "text/html", path="/predict"):
    return client.post(
        path,
        data={"file": (io.BytesIO(data), name)},
        content_type="multipart/form-data",
        headers={"Accept": accept},
    )


@pytest.fixture(scope="module")
def api_url(api) -> str:
    return api.url


# ---- the page and its assets ----

def test_page_has_form_and_only_local_assets(api_url):
    client = make_client(api_url)
    r = client.get("/")
    assert r.status_code == 200
    html = r.text
    assert 'enctype="multipart/form-data"' in html and 'name="file"' in html
    assert 'type="file"' in html and 'accept="image/*"' in html
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs, "the page loads its CSS, JS and icon"
    for ref in refs:
        assert not ref.startswith(("http:", "https:", "//")), f"{ref} is not served by the app"
        assert client.get(ref).status_code == 200, ref
    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    assert "kept only if you say whether the answer was right" in html


def test_page_gives_a_sticky_client_cookie_once(api_url):
    client = make_client(api_url)
    r = client.get("/")
    cookie = client.get_cookie("gg_client")
    assert cookie is not None and re.fullmatch(r"[A-Za-z0-9_-]{16,64}", cookie.value)
    assert "HttpOnly" in r.headers["Set-Cookie"] and "SameSite=Lax" in r.headers["Set-Cookie"]
    r2 = client.get("/")
    assert "Set-Cookie" not in r2.headers
    assert client.get_cookie("gg_client").value == cookie.value


# ---- predictions from the real API ----

def test_predict_fragment_from_real_api(api_url):
    client = make_client(api_url)
    r = upload(client, LAB_PHOTO.read_bytes())
    assert r.status_code == 200, r.text
    assert r.text.lstrip().startswith("<div"), "a fragment, not a whole page"
    assert "<html" not in r.text
    assert 'id="result-class">Vegetable/Fruit<' in r.text
    value = float(re.search(r'<meter[^>]* value="([0-9.]+)"', r.text).group(1))
    assert 0.5 < value <= 1.0
    assert 'id="result-variant">production<' in r.text
    assert r.headers["X-Model-Variant"] == "production"


def test_predict_json_from_real_api(api_url):
    client = make_client(api_url)
    r = upload(client, encode(textured(seed=3), "PNG"), name="x.png", accept="application/json")
    assert r.status_code == 200
    body = r.get_json()
    assert set(body) == {"prediction_id", "prediction", "probability", "model_version", "variant"}
    assert r.headers["X-Prediction-Id"] == body["prediction_id"]
    assert body["prediction"] in FOOD11_CLASSES
    assert 0.0 <= body["probability"] <= 1.0
    model = requests.get(api_url + "/model", timeout=5).json()
    assert body["model_version"] == model["version"]
    assert body["variant"] == "production"


def test_form_post_without_javascript_answers_whole_page(api_url):
    client = make_client(api_url)
    r = upload(client, LAB_PHOTO.read_bytes(), path="/")
    assert r.status_code == 200
    assert "<html" in r.text and 'id="result-class">Vegetable/Fruit<' in r.text


def test_test_route_classifies_bundled_photo(api_url):
    client = make_client(api_url)
    r = client.get("/test")
    assert r.status_code == 200
    assert 'id="result-class">Vegetable/Fruit<' in r.text
    assert "/static/test-photo.jpeg" in r.text
    j = client.get("/test", headers={"Accept": "application/json"}).get_json()
    assert j["prediction"] == "Vegetable/Fruit" and j["variant"] == "production"


def test_healthz(api_url):
    r = make_client(api_url).get("/healthz")
    assert r.status_code == 200 and r.get_json() == {"status": "alive"}


def test_metrics_count_routes_and_upstream_calls(api_url):
    client = make_client(api_url)
    before_ok = metric("web_requests_total", route="/predict", method="POST", status="2xx")
    before_calls = metric("web_upstream_request_duration_seconds_count")
    before_dur = metric("web_request_duration_seconds_count", route="/predict")
    before_none = metric("web_requests_total", route="none", method="GET", status="4xx")
    for seed in range(3):
        assert upload(client, encode(textured(seed=seed))).status_code == 200
    assert client.get("/no-such-page").status_code == 404
    assert metric("web_requests_total", route="/predict", method="POST", status="2xx") == before_ok + 3
    assert metric("web_upstream_request_duration_seconds_count") == before_calls + 3
    assert metric("web_request_duration_seconds_count", route="/predict") == before_dur + 3
    assert metric("web_requests_total", route="none", method="GET", status="4xx") == before_none + 1
    text = client.get("/metrics").text
    assert 'web_upstream_failures_total{reason="timeout"}' in text
    assert "web_request_duration_seconds_bucket" in text


# ---- every failure, in words ----

BAD_UPLOADS = [
    pytest.param(None, 400, "No photo chosen", id="no-file-field"),
    pytest.param((b"", ""), 400, "No photo chosen", id="empty-file-input"),
    pytest.param((b"", "a.jpg"), 400, "empty", id="empty-file"),
    pytest.param((b"hello, not a photo", "a.jpg"), 415, "not a photo", id="text-named-jpg"),
    pytest.param((b"%PDF-1.4\n" + b"x" * 3000, "doc.pdf"), 415, "not a photo", id="pdf"),
    pytest.param((b"\xff\xd8\xff" + b"\x00" * 20, "broken.jpg"), 415, "not a photo",
                 id="jpeg-magic-only"),
    pytest.param((b"GIF89a" + b"\x00" * 4, "tiny.gif"), 415, "not a photo", id="gif-header-only"),
]


@pytest.mark.parametrize(("file", "status", "words"), BAD_UPLOADS)
def test_bad_uploads_are_explained(api_url, file, status, words):
    def form():
        return {} if file is None else {"file": (io.BytesIO(file[0]), file[1])}

    client = make_client(api_url)
    r = client.post("/predict", data=form(), content_type="multipart/form-data")
    assert r.status_code == status
    assert words in r.text and 'role="alert"' in r.text
    j = client.post("/predict", data=form(), content_type="multipart/form-data",
                    headers={"Accept": "application/json"})
    assert j.status_code == status and j.get_json()["detail"]


def test_wrong_content_type_is_no_file(api_url):
    r = make_client(api_url).post("/predict", data=b'{"image": "x"}', content_type="application/json")
    assert r.status_code == 400 and "No photo chosen" in r.text


def test_file_over_limit_is_413(api_url):
    client = make_client(api_url, max_upload_bytes=20_000)
    big = encode(textured((800, 800), seed=1), quality=95)
    assert len(big) > 20_000
    r = upload(client, big)
    assert r.status_code == 413
    assert "too large" in r.text and "up to 20 kB" in r.text


class CountingStream(io.BytesIO):
    """A request body that counts what the app reads of it."""

    read_bytes = 0

    def read(self, n=-1):
        data = super().read(n)
        self.read_bytes += len(data)
        return data

    def readline(self, n=-1):
        data = super().readline(n)
        self.read_bytes += len(data)
        return data


def test_oversized_upload_is_refused_before_reading_the_body(api_url):
    client = make_client(api_url, max_upload_bytes=100_000)
    body = CountingStream(b"--x\r\n" + b"a" * 10_000)
    r = client.post(
        "/predict", input_stream=body, content_type="multipart/form-data; boundary=x",
        headers={"Accept": "application/json"},
        environ_overrides={"CONTENT_LENGTH": "50000000"},
    )
    assert r.status_code == 413
    assert "50 MB" in r.get_json()["detail"]
    assert body.read_bytes == 0


def test_api_4xx_message_is_shown(api_url):
    """A PNG of 48 megapixels is small on the wire; the API refuses it in its own words."""
    client = make_client(api_url)
    huge = encode(Image.new("RGB", (8000, 6000), (200, 120, 40)), "PNG")
    assert len(huge) < 1_000_000
    r = upload(client, huge, name="huge.png")
    assert r.status_code == 413
    assert "could not use this photo" in r.text and "over the limit" in r.text
    j = upload(client, huge, accept="application/json")
    assert j.status_code == 413 and "pixels" in j.get_json()["detail"]


def test_truncated_jpeg_is_refused_with_the_apis_words(api_url):
    client = make_client(api_url)
    data = encode(textured((640, 480), seed=9), quality=90)
    r = upload(client, data[: len(data) // 3], accept="application/json")
    assert r.status_code == 400
    assert r.get_json()["detail"]


def test_api_down_is_503_with_one_retry(closed_port_url):
    client = make_client(closed_port_url)
    before = metric("web_upstream_failures_total", reason="connection")
    r = upload(client, LAB_PHOTO.read_bytes())
    assert r.status_code == 503
    assert "not reachable" in r.text and "try again" in r.text
    assert r.headers["Retry-After"]
    assert "Traceback" not in r.text
    assert metric("web_upstream_failures_total", reason="connection") == before + 2  # first + retry
    j = upload(client, LAB_PHOTO.read_bytes(), accept="application/json")
    assert j.status_code == 503 and "reach" in j.get_json()["detail"]
    t = client.get("/test")
    assert t.status_code == 503 and "not reachable" in t.text and "<html" in t.text


def test_hung_api_times_out_without_retry(silent_api):
    client = make_client(silent_api, api_timeout=0.5)
    before = metric("web_upstream_failures_total", reason="timeout")
    r = upload(client, LAB_PHOTO.read_bytes())
    assert r.status_code == 503
    assert "did not answer within 0.5 seconds" in r.text
    assert metric("web_upstream_failures_total", reason="timeout") == before + 1


@pytest.mark.parametrize(
    ("status", "body", "answer", "reason", "words"),
    [
        (500, b'{"detail":"boom"}', 502, "http_5xx", "failed on this photo"),
        (502, b"<html>bad gateway</html>", 503, "http_5xx", "not available"),
        (200, b"not json", 502, "invalid_response", "could not read"),
        (200, b'{"prediction": "Soup"}', 502, "invalid_response", "could not read"),
        (422, b'{"detail":[{"loc":["body","image"],"msg":"Field required"}]}', 422, "http_4xx",
         "image: Field required"),
    ],
)
def test_upstream_failures_are_explained(upstream, status, body, answer, reason, words):
    upstream.status, upstream.body = status, body
    client = make_client(upstream.url, api_retries=1)
    before = metric("web_upstream_failures_total", reason=reason)
    r = upload(client, LAB_PHOTO.read_bytes())
    assert r.status_code == answer
    assert words in r.text
    assert metric("web_upstream_failures_total", reason=reason) == before + 1
    assert len(upstream.requests) == 1, "HTTP errors are not retried"


def test_unknown_routes_and_methods_are_friendly(api_url):
    client = make_client(api_url)
    r = client.get("/nope")
    assert r.status_code == 404 and "Page not found" in r.text
    r = client.get("/predict")
    assert r.status_code == 405 and "not accepted" in r.text
    r = client.get("/nope", headers={"Accept": "application/json"})
    assert r.get_json()["detail"]


# ---- what reaches the API, and what is kept ----

def test_sends_base64_json_and_client_id(upstream):
    client = make_client(upstream.url)
    client.get("/")
    cid = client.get_cookie("gg_client").value
    photo = LAB_PHOTO.read_bytes()
    r = upload(client, photo)
    assert r.status_code == 200
    assert 'id="result-variant">canary<' in r.text and "v-stub" in r.text
    sent = upstream.requests[0]
    assert sent["path"] == "/predict"
    assert sent["headers"]["X-Client-Id"] == cid
    import base64
    assert base64.b64decode(json.loads(sent["body"])["image"]) == photo


def test_first_request_already_carries_a_client_id(upstream):
    client = make_client(upstream.url)
    assert upload(client, LAB_PHOTO.read_bytes()).status_code == 200
    cid = client.get_cookie("gg_client").value
    assert upstream.requests[0]["headers"]["X-Client-Id"] == cid


def test_forged_client_cookie_is_replaced(upstream):
    client = make_client(upstream.url)
    client.set_cookie("gg_client", "bad value\r\nX-Evil: 1")
    assert upload(client, LAB_PHOTO.read_bytes()).status_code == 200
    sent = upstream.requests[0]["headers"]["X-Client-Id"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{16,64}", sent)
    assert client.get_cookie("gg_client").value == sent


def test_sticky_client_can_be_turned_off(upstream):
    client = make_client(upstream.url, sticky_client=False)
    r = upload(client, LAB_PHOTO.read_bytes())
    assert r.status_code == 200 and "Set-Cookie" not in r.headers
    assert "X-Client-Id" not in upstream.requests[0]["headers"]


def test_uploads_never_touch_disk_by_default(upstream, monkeypatch):
    import werkzeug.wrappers.request as wreq

    def no_disk(*a, **k):
        raise AssertionError("upload spooled through werkzeug's temp-file factory")

    monkeypatch.setattr(wreq, "default_stream_factory", no_disk)
    client = make_client(upstream.url)
    noise = np.random.default_rng(2).integers(0, 256, (900, 900, 3), dtype=np.uint8)
    big = encode(Image.fromarray(noise), quality=95)
    assert len(big) > 600_000  # above werkzeug's in-memory threshold
    assert upload(client, big).status_code == 200


def test_kept_uploads_get_generated_names_in_a_bounded_dir(upstream, tmp_path):
    keep = tmp_path / "uploads"
    client = make_client(upstream.url, upload_dir=str(keep), upload_keep=3)
    for seed in range(5):
        assert upload(client, encode(textured(seed=seed)), name="../../etc/passwd.jpg").status_code == 200
    names = sorted(p.name for p in keep.iterdir())
    assert len(names) == 6, names
    assert all(re.fullmatch(r"\d{20}-[0-9a-f]{16}\.(jpg|json)", n) for n in names)
    note = json.loads(next(keep.glob("*.json")).read_text())
    assert note["prediction"] == "Soup" and note["variant"] == "canary"
    assert not (tmp_path / "etc").exists()
    assert "not kept" not in client.get("/").text, "the page says that photos are kept"


# ---- settings and the command line ----

def test_settings_accept_lab_variable_and_prefer_web_prefix(monkeypatch):
    monkeypatch.setenv("FASTAPI_SERVER_URL", "http://fastapi_server:8000/")
    assert WebSettings().api_url == "http://fastapi_server:8000"
    monkeypatch.setenv("WEB_API_URL", "http://127.0.0.1/api")
    assert WebSettings().predict_url == "http://127.0.0.1/api/predict"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--api-url", "ftp://x"], "api_url"),
        (["--api-url", "http://"], "api_url"),
        (["--port", "0"], "port"),
        (["--port", "70000"], "port"),
        (["--workers", "0"], "workers"),
    ],
)
def test_serve_web_rejects_bad_arguments(args, words):
    p = subprocess.run([sys.executable, "-m", "gourmetgram", "serve-web", *args],
                       capture_output=True, text=True, env=child_env(), timeout=60)
    assert p.returncode == 2
    assert words in p.stderr.lower() and len(p.stderr.strip().splitlines()) == 1


def test_bad_timeout_setting_is_a_usage_error():
    env = child_env(WEB_TIMEOUT="5", WEB_API_TIMEOUT="30")
    p = subprocess.run([sys.executable, "-m", "gourmetgram", "serve-web"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 2 and "timeout" in p.stderr
