"""Drift detection with the real demo model: ``build-drift-reference`` on a folder of
PIL-made dish photos, detection delay on shifted images (greyscale, inverted,
blurred, noise), the API refusing a wrong or corrupt reference, and a real server
(gunicorn, 2 workers) whose drift metrics appear and move."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from app_api import drift
from app_api.drift import DriftReference, OnlineMMD
from app_api.model import load_model
from gourmetgram.cli import main as cli_main
from tests.app_api.drift_data import SHIFTS, dish
from tests.app_api.drift_data import features as features_of
from tests.images import b64, encode
from tests.procs import REPO_ROOT, child_env

N_REFERENCE = 160
N_SHIFTED = 24
STREAMS = 30


@pytest.fixture(scope="module")
def dish_folder(tmp_path_factory):
    """160 dishes at several depths and in several formats, plus files to skip."""
    root = tmp_path_factory.mktemp("dishes")
    fmts = [("JPEG", ".jpg"), ("PNG", ".png"), ("WEBP", ".webp"), ("JPEG", ".JPEG")]
    for i in range(N_REFERENCE):
        fmt, ext = fmts[i % len(fmts)]
        sub = root / f"class{i % 3}" / ("deep" if i % 2 else "")
        sub.mkdir(parents=True, exist_ok=True)
        dish(i).save(sub / f"dish{i}{ext}", fmt)
    (root / "notes.txt").write_text("not an image")
    (root / "class0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


@pytest.fixture(scope="module")
def reference_file(dish_folder, demo_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "drift-reference.npz"
    r = subprocess.run(
        [sys.executable, "-m", "gourmetgram", "build-drift-reference", "--images",
         str(dish_folder), "--out", str(out), "--model", str(demo_model), "--device", "cpu",
         "--seed", "7"],
        env=child_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and "broken.jpg" in r.stderr
    return out


@pytest.fixture(scope="module")
def model(demo_model):
    return load_model(demo_model, device="cpu")


def test_reference_records_what_rebuilds_it(reference_file, model):
    ref = DriftReference.load(reference_file)
    assert ref.model_sha256 == model.info.sha256
    assert ref.features.shape == (N_REFERENCE, model.info.feature_dim)
    assert ref.meta["images"] == N_REFERENCE and ref.meta["skipped"] == 1
    assert (ref.ert, ref.window, ref.meta["seed"]) == (300, 10, 7)
    assert ref.meta["projection"] == "pca" and ref.proj_matrix.shape[1] == 32
    again = drift.build_reference(
        ref.features, model_sha256=ref.model_sha256, ert=ref.ert, window=ref.window,
        seed=ref.meta["seed"], projection="pca", dim=32,
    )
    np.testing.assert_array_equal(again.thresholds, ref.thresholds)


@pytest.fixture(scope="module")
def shifted_features(model):
    return {
        name: features_of(model, [shift(dish(50_000 + i)) for i in range(N_SHIFTED)])
        for name, shift in SHIFTS.items()
    }


@pytest.mark.parametrize("shift", sorted(SHIFTS))
def test_shifted_images_are_flagged_within_a_window(reference_file, shifted_features, shift):
    """30 streams of the shifted images in random orders, each from a fresh start of
    the detector (window holding in-distribution samples): the alarm comes within
    W=10 samples every time (measured means: docs/drift.md)."""
    ref = DriftReference.load(reference_file)
    det = OnlineMMD(ref, seed=1)
    feats = shifted_features[shift]
    rng = np.random.default_rng(0)
    delays = []
    for _ in range(STREAMS):
        det.reset()
        delay = None
        for i, j in enumerate(rng.permutation(len(feats))):
            if det.update(feats[j])[2]:
                delay = i + 1
                break
        delays.append(delay)
    print(f"{shift}: delays {delays}")
    assert None not in delays and max(delays) <= ref.window, delays


def test_in_distribution_dishes_stay_below_the_threshold(reference_file, model):
    ref = DriftReference.load(reference_file)
    det = OnlineMMD(ref, seed=2)
    stats = [det.update(f)[0] for f in features_of(model, [dish(90_000 + i) for i in range(20)])]
    assert np.median(stats) < 0.5 * ref.stationary_threshold


@pytest.mark.parametrize(
    "args, message",
    [
        (["--images", "{missing}"], "is not a folder"),
        (["--images", "{empty}"], "holds no images"),
        (["--images", "{few}"], "holds 3 images"),
        (["--ert", "abc"], "--ert must be a number"),
        (["--ert", "1"], "--ert must be between"),
        (["--ert", "nan"], "--ert must be between"),
        (["--window", "1"], "--window must be between"),
        (["--window", "x"], "--window must be a whole number"),
        (["--seed", "-1"], "--seed must be between"),
        (["--dim", "0"], "--dim must be between"),
        (["--streams", "2000", "--ert", "1000"], "too few for --ert"),
        (["--out", "{folder}"], "is a folder"),
        (["--out", "{nodir}/ref.npz"], "does not exist"),
        (["--model", "{missing}/m.pt"], "--model"),
    ],
)
def test_bad_build_arguments_are_usage_errors(tmp_path, dish_folder, capsys, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    (tmp_path / "few").mkdir()
    for i in range(3):
        dish(i).save(tmp_path / "few" / f"{i}.png")
    subs = {"missing": tmp_path / "missing", "empty": tmp_path / "empty",
            "few": tmp_path / "few", "folder": tmp_path, "nodir": tmp_path / "nodir"}
    args = [a.format(**subs) for a in args]
    base = {"--images": str(dish_folder), "--out": str(tmp_path / "ref.npz")}
    argv = ["build-drift-reference"]
    for k, v in base.items():
        if k not in args:
            argv += [k, v]
    rc = cli_main(argv + args)
    err = capsys.readouterr().err
    assert rc == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "ref.npz").exists()


def _serve(args, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "gourmetgram", "serve-api", "--port", "1", *args],
        env=child_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
    )


def test_serve_api_refuses_a_reference_for_another_model(tmp_path, reference_file, model):
    ref = DriftReference.load(reference_file)
    ref.meta["model_sha256"] = "0" * 64
    other = tmp_path / "other.npz"
    ref.save(other)
    r = _serve(["--model", model.info.path, "--drift-reference", str(other)])
    assert r.returncode == 2
    assert "built for model sha256 000000000000" in r.stderr and "rebuild it" in r.stderr


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 broken zip", b"hello"])
def test_serve_api_refuses_a_corrupt_reference(tmp_path, model, content):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(content)
    r = _serve(["--model", model.info.path, "--drift-reference", str(bad)])
    assert r.returncode == 2 and "corrupt" in r.stderr, r.stderr


def test_serve_api_names_a_missing_reference(tmp_path, model):
    r = _serve(["--model", model.info.path, "--drift-reference", str(tmp_path / "no.npz")])
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_app_refuses_to_start_with_another_models_reference(tmp_path, reference_file, model):
    """The worker's own check (the env file may change without the CLI's check)."""
    from fastapi.testclient import TestClient

    from app_api.main import create_app
    from app_api.settings import ApiSettings

    ref = DriftReference.load(reference_file)
    ref.meta["model_sha256"] = "1" * 64
    ref.save(tmp_path / "other.npz")
    app = create_app(ApiSettings(model=model.info.path, device="cpu",
                                 drift_reference=tmp_path / "other.npz", variant="refuse"))
    with pytest.raises(drift.DriftReferenceError, match="built for model sha256 111111111111"):
        with TestClient(app):
            pass


def test_app_without_reference_says_drift_is_off(model, caplog):
    from fastapi.testclient import TestClient

    from app_api.main import create_app
    from app_api.settings import ApiSettings

    app = create_app(ApiSettings(model=model.info.path, device="cpu", variant="nodrift",
                                 drift_bootstrap_samples=0))
    with caplog.at_level("INFO"), TestClient(app) as client:
        text = client.get("/metrics").text
        assert client.get("/model").json()["drift"] == {"state": "off"}
    assert "drift detection off" in caplog.text and "bootstrapping off" in caplog.text
    states = {
        s.labels["state"]: s.value for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "drift_detector_state" and s.labels["variant"] == "nodrift"
    }
    assert states == {"off": 1, "bootstrapping": 0, "armed": 0}
    enabled = [
        s for fam in text_string_to_metric_families(text) for s in fam.samples
        if s.name == "drift_enabled" and s.labels["variant"] == "nodrift"
    ]
    assert [(s.labels["model_version"], s.value) for s in enabled] == [(model.info.version, 0)]
    assert app.state.feature_sinks == []


def _drift_metrics(url: str, variant: str) -> dict[str, float]:
    text = requests.get(url + "/metrics", timeout=10).text
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.startswith("drift_") and s.labels.get("variant") == variant:
                if "le" in s.labels:
                    continue
                out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def test_server_with_reference_exposes_drift_metrics_that_move(
    start_api, demo_model, reference_file
):
    ref = DriftReference.load(reference_file)
    api = start_api(demo_model, variant="driftcheck", workers=2,
                    extra_args=["--drift-reference", str(reference_file)])
    m = _drift_metrics(api.url, "driftcheck")
    assert m["drift_enabled"] == 1
    assert m["drift_threshold"] == pytest.approx(ref.stationary_threshold)
    assert m.get("drift_samples_total", 0) == 0
    n = 40
    for i in range(n):
        img = b64(encode(SHIFTS["noise"](dish(70_000 + i)), quality=90))
        r = requests.post(api.url + "/predict", json={"image": img}, timeout=30)
        assert r.status_code == 200
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = _drift_metrics(api.url, "driftcheck")
        if m.get("drift_samples_total", 0) >= n:
            break
        time.sleep(0.2)
    assert m["drift_samples_total"] == n
    assert m["drift_test_stat_count"] == n
    assert m["drift_samples_dropped_total"] == 0
    # Each worker restarts after an alarm and alarms again within a few samples.
    assert m["drift_events_total"] >= 4
