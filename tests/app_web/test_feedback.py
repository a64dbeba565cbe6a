"""Feedback through the web app (Flask test client, a stand-in API that answers
"Soup" so the tests know the predicted class): a photo waits in the pending store,
becomes durable only on the person's answer; bad feedback is a clear 4xx and never
changes what was accepted; the review page labels kept photos behind its password."""

from __future__ import annotations

import hashlib
import io
import secrets

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app_web import create_app
from app_web.feedback_store import FeedbackStore
from tests.images import encode, textured

JSON = {"Accept": "application/json"}


@pytest.fixture
def password(tmp_path):
    secret = secrets.token_urlsafe(24)  # generated per test, like the deploy's
    f = tmp_path / "review-password"
    f.write_text(secret + "\n")
    f.chmod(0o600)
    return f, secret


@pytest.fixture
def web(upstream, password, feedback_dir):
    def make(**settings):
        app = create_app({"api_url": upstream.url, "review_password_file": str(password[0]),
                          **settings})
        return app.test_client()
    return make


def predict(client, seed=1):
    photo = encode(textured(seed=seed), "PNG")
    r = client.post("/predict", data={"file": (io.BytesIO(photo), "p.png")},
                    content_type="multipart/form-data", headers=JSON)
    assert r.status_code == 200, r.text
    return r.get_json(), photo


def store(feedback_dir) -> FeedbackStore:
    return FeedbackStore("", feedback_dir)


def scrape(client) -> dict:
    out = {}
    for fam in text_string_to_metric_families(client.get("/metrics").text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_photo_is_kept_only_after_an_answer(web, feedback_dir):
    client = web()
    body, photo = predict(client)
    pid = body["prediction_id"]
    assert len(pid) == 32 and body["prediction"] == "Soup"
    assert (feedback_dir / "pending" / f"{pid}.photo").read_bytes() == photo
    assert not list((feedback_dir / "photos").rglob("*.png")), "nothing durable before an answer"
    assert store(feedback_dir).get(pid) is None

    r = client.post("/feedback", data={"prediction_id": pid, "verdict": "wrong",
                                       "label": "Rice", "note": "it is risotto"}, headers=JSON)
    assert r.status_code == 201, r.text
    assert r.get_json() == {"prediction_id": pid, "verdict": "wrong", "label": "Rice", "kept": True}
    row = store(feedback_dir).get(pid)
    assert (row.queue, row.predicted, row.user_label, row.note) == ("flagged", "Soup", "Rice",
                                                                    "it is risotto")
    assert (row.variant, row.model_version) == ("canary", "v-stub")
    sha = hashlib.sha256(photo).hexdigest()
    assert row.photo_sha256 == sha
    assert (feedback_dir / "photos" / sha[:2] / f"{sha}.png").read_bytes() == photo
    assert not (feedback_dir / "pending" / f"{pid}.photo").exists()


def test_right_answer_and_page_fragment(web, feedback_dir):
    client = web()
    r = client.post("/predict", data={"file": (io.BytesIO(encode(textured(seed=4), "PNG")), "a.png")},
                    content_type="multipart/form-data")
    assert 'name="verdict" value="wrong"' in r.text and "kept only if you answer" in r.text
    pid = r.headers["X-Prediction-Id"]
    assert pid in r.text
    r = client.post("/feedback", data={"prediction_id": pid, "verdict": "right"},
                    headers={"X-Fragment": "1"})
    assert r.status_code == 201 and "you said <strong>Soup</strong> is right" in r.text
    assert store(feedback_dir).get(pid).queue == "confirmed"


def bad_cases():
    big = "x" * 501
    return [
        pytest.param({"prediction_id": "", "verdict": "right"}, 400, "names no prediction",
                     id="no-id"),
        pytest.param({"prediction_id": "../etc/passwd", "verdict": "right"}, 400,
                     "not a prediction id", id="malformed-id"),
        pytest.param({"prediction_id": "0" * 32, "verdict": "right"}, 404, "do not know",
                     id="unknown-id"),
        pytest.param({"verdict": "maybe"}, 422, "right or wrong", id="bad-verdict"),
        pytest.param({"verdict": "wrong"}, 422, "Pick the right class", id="wrong-no-label"),
        pytest.param({"verdict": "wrong", "label": "Pizza"}, 422, "not one of", id="not-a-class"),
        pytest.param({"verdict": "wrong", "label": "Soup"}, 422, "what the classifier said",
                     id="wrong-same-class"),
        pytest.param({"verdict": "right", "label": "Rice"}, 422, "say it was wrong",
                     id="right-other-class"),
        pytest.param({"verdict": "wrong", "label": "Rice", "note": big}, 413, "501 characters",
                     id="oversized-note"),
    ]


@pytest.mark.parametrize(("fields", "status", "words"), bad_cases())
def test_bad_feedback_is_4xx_and_changes_nothing(web, feedback_dir, fields, status, words):
    client = web()
    body, _ = predict(client)
    pid = body["prediction_id"]
    r = client.post("/feedback", data={"prediction_id": pid, **fields}, headers=JSON)
    assert r.status_code == status, r.text
    assert words in r.get_json()["detail"]
    assert store(feedback_dir).get(pid) is None
    # The prediction still takes a good answer afterwards.
    ok = client.post("/feedback", data={"prediction_id": pid, "verdict": "right"}, headers=JSON)
    assert ok.status_code == 201


@pytest.mark.parametrize("second", [{"verdict": "right"}, {"verdict": "wrong", "label": "Egg"}])
def test_repeated_feedback_is_409_and_the_first_is_kept(web, feedback_dir, second):
    client = web()
    pid = predict(client)[0]["prediction_id"]
    first = {"prediction_id": pid, "verdict": "wrong", "label": "Rice"}
    assert client.post("/feedback", data=first, headers=JSON).status_code == 201
    r = client.post("/feedback", data={"prediction_id": pid, **second}, headers=JSON)
    assert r.status_code == 409 and "already has an answer" in r.get_json()["detail"]
    assert store(feedback_dir).get(pid).user_label == "Rice"


def test_json_body_and_non_object_body(web, feedback_dir):
    client = web()
    pid = predict(client)[0]["prediction_id"]
    assert client.post("/feedback", json=[1, 2], headers=JSON).status_code == 400
    r = client.post("/feedback", json={"prediction_id": pid, "verdict": "right"}, headers=JSON)
    assert r.status_code == 201


def test_sampled_predictions_are_kept_with_their_probability(web, feedback_dir):
    client = web(review_sample_rate=0.25, review_low_confidence_rate=1.0,
                 review_low_confidence_below=0.95)  # the stub's 0.9 counts as low
    pid = predict(client)[0]["prediction_id"]
    row = store(feedback_dir).get(pid)
    assert row.queue == "low_confidence" and row.sampling_probability == pytest.approx(1.0)
    assert row.verdict is None
    # A person may still answer on a sampled prediction; it stays in its queue.
    assert client.post("/feedback", data={"prediction_id": pid, "verdict": "wrong",
                                          "label": "Egg"}, headers=JSON).status_code == 201
    assert store(feedback_dir).get(pid).queue == "low_confidence"
    assert "small random share" in client.get("/").text


def review_token(client, secret) -> str:
    import re

    page = client.get("/review", auth=("operator", secret)).text
    return re.search(r'name="token" value="([0-9a-f]+)"', page).group(1)


@pytest.mark.parametrize("auth", [None, ("operator", "wrong-password-xx"), ("admin", None)])
def test_review_needs_the_password(web, password, auth):
    client = web()
    if auth and auth[1] is None:
        auth = (auth[0], password[1])
    r = client.get("/review", auth=auth)
    assert r.status_code == 401 and "Basic" in r.headers["WWW-Authenticate"]
    assert client.post("/review/label", auth=auth).status_code == 401


def test_no_password_no_review_page(upstream):
    client = create_app({"api_url": upstream.url}).test_client()
    assert client.get("/review").status_code == 404


def test_operator_labels_and_accuracy_metric(web, password, feedback_dir):
    client = web(review_sample_rate=1.0)
    secret = password[1]
    pids = [predict(client, seed=i)[0]["prediction_id"] for i in range(4)]
    page = client.get("/review", auth=("operator", secret)).text
    assert all(pid in page for pid in pids) and "Random sample" in page
    thumb = client.get(f"/review/photo/{pids[0]}", auth=("operator", secret))
    assert thumb.status_code == 200 and thumb.content_type == "image/png"
    token = review_token(client, secret)
    for pid, label in zip(pids, ["Soup", "Soup", "Soup", "Rice"], strict=True):
        r = client.post("/review/label", data={"token": token, "prediction_id": pid,
                                               "label": label}, auth=("operator", secret))
        assert r.status_code == 303
    page = client.get("/review", auth=("operator", secret)).text
    assert "75.0%" in page
    m = scrape(client)
    key = (("model_version", "v-stub"), ("variant", "canary"))
    assert m[("feedback_accuracy", key)] == pytest.approx(0.75)
    assert m[("feedback_accuracy_lower", key)] < 0.75 < m[("feedback_accuracy_upper", key)]
    assert m[("feedback_accuracy_labels", key)] == 4
    assert m[("feedback_labelled_total", (*key[:1], ("queue", "random"), *key[1:]))] == 4
    assert m[("feedback_store_up", ())] == 1


@pytest.mark.parametrize(("fields", "status"), [
    ({"label": "Soup"}, 403),
    ({"token": "T", "prediction_id": "f" * 32, "label": "Soup"}, 404),
    ({"token": "T", "prediction_id": "nope", "label": "Soup"}, 400),
    ({"token": "T", "label": "Pizza"}, 422),
])
def test_bad_labels_are_4xx(web, password, feedback_dir, fields, status):
    client = web(review_sample_rate=1.0)
    pid = predict(client)[0]["prediction_id"]
    token = review_token(client, password[1])
    fields = {"prediction_id": pid, **fields}
    if fields.get("token") == "T":
        fields["token"] = token
    r = client.post("/review/label", data=fields, auth=("operator", password[1]), headers=JSON)
    assert r.status_code == status, r.text
    assert store(feedback_dir).get(pid).label is None


def test_feedback_counts_metric(web):
    client = web()
    for verdict in ("right", "right", "wrong"):
        pid = predict(client)[0]["prediction_id"]
        data = {"prediction_id": pid, "verdict": verdict}
        if verdict == "wrong":
            data["label"] = "Egg"
        assert client.post("/feedback", data=data, headers=JSON).status_code == 201
    m = scrape(client)
    key = (("model_version", "v-stub"), ("variant", "canary"))
    assert m[("feedback_total", (("kind", "right"), *key))] == 2
    assert m[("feedback_total", (("kind", "wrong"), *key))] == 1


def test_export_writes_an_image_folder_with_a_manifest(web, password, feedback_dir, tmp_path):
    import csv
    import subprocess
    import sys

    from tests.procs import child_env

    client = web(review_sample_rate=1.0)
    a, photo_a = predict(client, seed=21)
    b, photo_b = predict(client, seed=22)
    assert client.post("/feedback", data={"prediction_id": a["prediction_id"], "verdict": "wrong",
                                          "label": "Noodles/Pasta"}, headers=JSON).status_code == 201
    token = review_token(client, password[1])
    client.post("/review/label", data={"token": token, "prediction_id": b["prediction_id"],
                                       "label": "Bread"}, auth=("operator", password[1]))
    out = tmp_path / "export"
    r = subprocess.run([sys.executable, "-m", "gourmetgram", "feedback", "export", "--out",
                        str(out), "--feedback-dir", str(feedback_dir)],
                       capture_output=True, text=True, env=child_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert "2 labelled photos" in r.stdout
    manifest = list(csv.DictReader(open(out / "manifest.csv")))
    by_id = {m["prediction_id"]: m for m in manifest}
    ma, mb = by_id[a["prediction_id"]], by_id[b["prediction_id"]]
    assert (ma["label"], ma["label_source"], ma["queue"]) == ("Noodles/Pasta", "user", "random")
    assert (mb["label"], mb["label_source"]) == ("Bread", "operator")
    assert (out / ma["file"]).read_bytes() == photo_a and ma["file"].startswith("Noodles_Pasta/")
    assert (out / mb["file"]).read_bytes() == photo_b
    assert ma["sha256"] == hashlib.sha256(photo_a).hexdigest()
    assert {p.name for p in out.iterdir()} == {"Noodles_Pasta", "Bread", "manifest.csv"}
    again = subprocess.run([sys.executable, "-m", "gourmetgram", "feedback", "export", "--out",
                            str(out), "--feedback-dir", str(feedback_dir)],
                           capture_output=True, text=True, env=child_env(), timeout=60)
    assert again.returncode == 2 and "not empty" in again.stderr
