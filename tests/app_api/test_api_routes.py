"""The API's routes and headers (in-process, TestClient with lifespan)."""

from __future__ import annotations

import re

import pytest
import torch
from fastapi.testclient import TestClient

from app_api.main import create_app
from app_api.model import ModelLoadError, build_mobilenet_v2
from app_api.settings import ApiSettings
from tests.images import b64, photo_bytes


@pytest.fixture(scope="module")
def client(demo_model):
    with TestClient(create_app(ApiSettings(model=demo_model, device="cpu", variant="canary"))) as c:
        yield c


def test_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "alive", "variant": "canary"}


def test_readyz_after_start_up(client):
    assert client.get("/readyz").json() == {
        "ready": True, "variant": "canary", "model_version": "demo-effnet-lite0-1"}


def test_model_metadata(client, demo_model):
    from app_api.model import FOOD11_CLASSES, sha256_of

    m = client.get("/model").json()
    assert m["variant"] == "canary"
    assert m["version"] == "demo-effnet-lite0-1"
    assert m["sha256"] == sha256_of(demo_model)
    assert m["form"] == "gourmetgram-archive"
    assert m["class_names"] == list(FOOD11_CLASSES)
    assert m["preprocessing"]["interpolation"] == "bicubic"
    assert m["feature_dim"] == 1280 and m["device"] == "cpu"
    # The file's name, never its path on the host.
    assert m["file"] == demo_model.name and "path" not in m
    assert str(demo_model.parent) not in str(m)


def test_docs_and_openapi(client):
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/predict", "/healthz", "/readyz", "/model"} <= set(spec["paths"])
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert "image" in str(body["application/json"]["schema"]["properties"])
    assert {"image/*", "application/octet-stream"} <= set(body)


def test_predict_headers_and_body(client):
    r = client.post("/predict", json={"image": b64(photo_bytes())})
    assert r.status_code == 200
    body = r.json()
    assert r.headers["X-Model-Variant"] == body["variant"] == "canary"
    assert r.headers["X-Model-Version"] == body["model_version"] == "demo-effnet-lite0-1"
    assert 0.0 < body["probability"] <= 1.0


def test_every_prediction_has_its_own_id(client):
    ids = set()
    for _ in range(3):
        r = client.post("/predict", json={"image": b64(photo_bytes())})
        assert r.headers["X-Prediction-Id"] == r.json()["prediction_id"]
        assert re.fullmatch(r"[0-9a-f]{32}", r.json()["prediction_id"])
        ids.add(r.json()["prediction_id"])
    assert len(ids) == 3


def test_metrics_exposition_in_process(client):
    client.post("/predict", json={"image": b64(photo_bytes())})
    text = client.get("/metrics").text
    for name in ("http_requests_total", "http_request_duration_seconds_bucket",
                 "prediction_confidence_bucket", "predicted_class_total",
                 "preprocess_duration_seconds_bucket", "inference_duration_seconds_bucket",
                 "inference_batch_size_bucket", "http_requests_in_flight", "model_info"):
        assert name in text, name
    assert 'handler="/predict"' in text and 'variant="canary"' in text


def test_not_ready_before_the_model_is_loaded(demo_model):
    """Without the lifespan (no model yet): alive, but not ready."""
    c = TestClient(create_app(ApiSettings(model=demo_model, device="cpu")))
    assert c.get("/healthz").status_code == 200
    assert c.get("/readyz").status_code == 503
    assert c.get("/model").status_code == 503


def test_start_up_fails_on_a_bad_model(tmp_path):
    bad = tmp_path / "food11.pth"
    bad.write_bytes(b"nope")
    with pytest.raises(ModelLoadError), TestClient(create_app(ApiSettings(model=bad, device="cpu"))):
        pass


def test_pickled_module_served_with_opt_in(tmp_path):
    path = tmp_path / "food11.pth"
    torch.save(build_mobilenet_v2().eval(), path)
    settings = ApiSettings(model=path, device="cpu", allow_pickle=True, model_version="lab-1")
    with TestClient(create_app(settings)) as c:
        assert c.get("/model").json()["form"] == "pickled-module"
        r = c.post("/predict", json={"image": b64(photo_bytes())})
        assert r.status_code == 200 and r.json()["model_version"] == "lab-1"
