"""Every bad input is a 4xx with a JSON ``detail`` (never a 500), and every image form a
camera or editor produces is classified like the plain RGB JPEG of the same picture.
In-process (TestClient with lifespan); tests/app_api/test_api_server.py repeats the bad
inputs against a real gunicorn server."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app_api.main import create_app
from app_api.model import load_model
from app_api.preprocess import image_from_base64
from app_api.settings import ApiSettings
from tests.app_api.bad_inputs import MAX_BODY, MAX_PIXELS, bad_inputs
from tests.images import b64, encode, photo_bytes


@pytest.fixture(scope="module")
def client(demo_model):
    settings = ApiSettings(
        model=demo_model, device="cpu", variant="testing", max_body_bytes=MAX_BODY,
        max_pixels=MAX_PIXELS, max_batch=4,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def model(demo_model):
    return load_model(demo_model, device="cpu")


@pytest.mark.parametrize("case", bad_inputs(), ids=lambda c: c[0])
def test_bad_input_is_a_4xx_with_json_detail(client, case):
    _, body, headers, status, words = case
    r = client.post(
        "/predict", content=body, headers={"content-type": "application/json", **headers}
    )
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert detail
    assert words.lower() in str(detail).lower()
    # Errors say who answered too, so a client behind Nginx can attribute them.
    assert r.headers["X-Model-Variant"] == "testing"


def test_good_request_after_bad_ones(client):
    r = client.post("/predict", json={"image": b64(photo_bytes())})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"prediction_id", "prediction", "probability", "model_version", "variant"}
    assert body["variant"] == "testing"
    assert r.headers["X-Model-Variant"] == "testing"
    assert r.headers["X-Model-Version"] == body["model_version"] == "demo-effnet-lite0-1"


def test_data_url_prefix_and_line_breaks_are_accepted(client):
    text = b64(photo_bytes())
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    r1 = client.post("/predict", json={"image": "data:image/jpeg;base64," + text})
    r2 = client.post("/predict", json={"image": wrapped})
    assert r1.status_code == r2.status_code == 200
    assert r1.json()["prediction"] == r2.json()["prediction"]


def test_unknown_route_and_wrong_method(client):
    assert client.get("/nope").status_code == 404
    r = client.get("/predict")
    assert r.status_code == 405 and r.json()["detail"]


# --- image forms -------------------------------------------------------------------

def _rgb(raw: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(raw))
    im.load()
    return im.convert("RGB")


def _variants(raw: bytes) -> dict[str, bytes]:
    base = _rgb(raw)
    rgba = np.array(base.convert("RGBA"))
    rgba[:8, :8, 3] = 0  # a transparent corner: alpha must be composited, not dropped
    pal = base.quantize(255)  # indices 0..254; 255 becomes the transparent entry
    pal_px = np.array(pal)
    pal_px[:8, :8] = 255
    pal_img = Image.fromarray(pal_px, "P")
    pal_img.putpalette(pal.getpalette()[: 255 * 3] + [0, 0, 0])
    grey = np.asarray(base.convert("L"), dtype=np.uint16)
    rotated = base.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    return {
        "png": encode(base, "PNG"),
        "rgba_png": encode(Image.fromarray(rgba, "RGBA"), "PNG"),
        "greyscale_jpeg": encode(base.convert("L"), quality=95),
        "cmyk_jpeg": encode(base.convert("CMYK"), quality=95),
        "grey16_png": encode(Image.fromarray(grey * 257), "PNG"),
        "palette_transparency_png": encode(pal_img, "PNG", transparency=255),
        "exif_rotated_jpeg": encode(rotated, quality=95, exif=exif.tobytes()),
        "webp": encode(base, "WEBP", quality=95),
    }


def _references(raw: bytes) -> dict[str, bytes]:
    """Forms that change the picture itself (no colour, 255 colours) are compared with
    the RGB version of their own picture; every other form with the photo."""
    base = _rgb(raw)
    pal = np.array(base.quantize(255).convert("RGB"))
    pal[:8, :8] = 255  # the transparent corner, composited onto white
    grey = encode(base.convert("L").convert("RGB"), quality=95)
    return {"greyscale_jpeg": grey, "grey16_png": grey,
            "palette_transparency_png": encode(Image.fromarray(pal), "PNG")}


@pytest.mark.parametrize("large", [False, True], ids=["small", "large"])
def test_image_forms_classify_like_the_rgb_jpeg(client, large):
    raw = photo_bytes(large)
    refs = _references(raw)
    for name, data in _variants(raw).items():
        ref = client.post("/predict", json={"image": b64(refs.get(name, raw))}).json()
        r = client.post("/predict", json={"image": b64(data)})
        assert r.status_code == 200, (name, r.text)
        got = r.json()
        assert got["prediction"] == ref["prediction"], name
        assert abs(got["probability"] - ref["probability"]) < 0.08, (name, got, ref)


def _prepared(model, data: bytes) -> np.ndarray:
    return image_from_base64(b64(data), model.info.preprocessing, 10**8).astype(np.float32)


def test_exif_orientation_is_applied(model):
    raw = photo_bytes()
    base = _rgb(raw)
    v = _variants(raw)
    want = _prepared(model, encode(base, "PNG"))
    rotated_no_exif = _prepared(model, encode(base.transpose(Image.Transpose.ROTATE_90), quality=95))
    got = _prepared(model, v["exif_rotated_jpeg"])
    assert np.abs(got - want).mean() < 4.0
    assert np.abs(rotated_no_exif - want).mean() > 4 * np.abs(got - want).mean()


def test_sixteen_bit_keeps_its_brightness(model):
    """A 16-bit image is scaled to 8 bits, not contrast-stretched: a dark picture stays dark."""
    grey8 = np.asarray(_rgb(photo_bytes()).convert("L"), dtype=np.uint16)
    dark16 = encode(Image.fromarray(grey8 * 64), "PNG")  # a quarter of the 16-bit range
    want = _prepared(model, encode(Image.fromarray((grey8 // 4).astype(np.uint8)), "PNG"))
    got = _prepared(model, dark16)
    assert np.abs(got - want).mean() < 1.5


def test_transparent_pixels_become_white(model):
    im = Image.new("RGBA", (300, 300), (200, 10, 10, 0))
    got = _prepared(model, encode(im, "PNG"))
    assert got.min() == 255.0
