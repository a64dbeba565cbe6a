"""Bootstrapped drift references: several real processes sharing one state folder build
exactly one reference from exactly the first N samples; a torn row, a corrupt reference
and another model are handled; the worker's monitor goes bootstrapping -> armed and
then detects a shift; a real server (gunicorn, 2 workers) bootstraps from its first
predictions, says so on /metrics and /model, and keeps the reference across a restart."""

from __future__ import annotations

import multiprocessing
import time

import numpy as np
import pytest
import requests
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from app_api import drift
from app_api.drift_monitor import DriftMonitor
from app_api.drift_reference import BootstrapStore
from tests.app_api.drift_data import SHIFTS, dish
from tests.images import b64, encode

DIM = 16
SHA = "cd" * 32


def rows(seed: int, n: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.maximum(rng.standard_normal((n, DIM)) * np.linspace(2, 0.5, DIM) + 0.5 + shift, 0)


def small_build(rows_: np.ndarray) -> drift.DriftReference:
    return drift.build_reference(rows_, model_sha256=SHA, ert=50, n_streams=1000)


def _worker(folder: str, seed: int, n: int, target: int, log: str) -> None:
    """One 'gunicorn worker': adds its samples; records each build it performs."""
    store = BootstrapStore(folder, SHA, DIM, target)

    def build(r):
        with open(log, "a") as f:
            f.write(f"{seed} {len(r)}\n")
        return small_build(r)

    for x in rows(seed, n):
        store.add(x, build)


def test_workers_sharing_a_folder_build_one_reference_from_the_first_n(tmp_path):
    target, log = 100, tmp_path / "builds.log"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), s, 60, target, str(log)))
             for s in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    # 240 samples offered, one build of exactly 100 rows, by one of the four.
    assert len(log.read_text().splitlines()) == 1
    assert log.read_text().split()[1] == str(target)
    store = BootstrapStore(tmp_path, SHA, DIM, target)
    ref = store.load()
    assert ref is not None and len(ref.features) == target
    assert not store.samples_path.exists()
    assert store.collected() == target
    offered = np.concatenate([rows(s, 60) for s in range(4)]).astype(np.float32)
    # Every reference row is one of the offered rows (none torn, none invented).
    assert all((offered == r).all(1).any() for r in ref.features.astype(np.float32))


def test_a_torn_row_is_ignored_and_overwritten(tmp_path):
    store = BootstrapStore(tmp_path, SHA, DIM, 50)
    for x in rows(0, 3):
        store.add(x, small_build)
    with open(store.samples_path, "ab") as f:
        f.write(b"\x00" * 10)  # a crash mid-write
    assert store.collected() == 3
    assert store.add(rows(1, 1)[0], small_build) == 4
    assert store.samples_path.stat().st_size == 4 * 4 * DIM


def test_another_model_bootstraps_its_own_reference(tmp_path):
    a = BootstrapStore(tmp_path, SHA, DIM, 80)
    for x in rows(0, 80):
        a.add(x, small_build)
    assert a.load() is not None
    b = BootstrapStore(tmp_path, "ef" * 32, DIM, 80)
    assert b.load() is None and b.collected() == 0
    assert b.reference_path != a.reference_path
    assert BootstrapStore(tmp_path, SHA, DIM, 80).load() is not None  # kept for a rollback


def test_a_corrupt_reference_is_dropped_and_collected_again(tmp_path):
    store = BootstrapStore(tmp_path, SHA, DIM, 80)
    store.reference_path.write_bytes(b"PK\x03\x04 broken")
    assert store.load() is None
    assert not store.reference_path.exists()
    assert store.add(rows(0, 1)[0], small_build) == 1


def test_unusable_samples_are_discarded_not_rebuilt_forever(tmp_path):
    """Every prediction the same image: no variation, no reference; collect again."""
    store = BootstrapStore(tmp_path, SHA, DIM, 80)
    same = rows(0, 1)[0]
    for _ in range(79):
        store.add(same, small_build)
    with pytest.raises(drift.DriftReferenceError, match="all identical"):
        store.add(same, small_build)
    assert store.collected() == 0 and store.load() is None


def test_unwritable_state_folder_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(drift.DriftReferenceError, match="not writable.*FOOD11_STATE_DIR"):
        BootstrapStore(tmp_path / "file" / "sub", SHA, DIM, 80)


def _metric(name, labels):
    return REGISTRY.get_sample_value(name, labels)


def test_monitor_bootstraps_then_arms_and_detects(tmp_path):
    labels = ("bootmon", "v1")
    lab = dict(zip(("variant", "model_version"), labels, strict=True))
    store = BootstrapStore(tmp_path, SHA, DIM, 100)
    monitor = DriftMonitor(labels, 1000, bootstrap=store, build=small_build, seed=0)
    assert monitor.state == "bootstrapping"
    assert _metric("drift_detector_state", {**lab, "state": "bootstrapping"}) == 1
    assert _metric("drift_enabled", lab) == 0
    monitor.start()
    for x in rows(5, 100):
        monitor.submit(x)
    deadline = time.monotonic() + 20
    while monitor.state != "armed" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert monitor.state == "armed"
    assert _metric("drift_detector_state", {**lab, "state": "armed"}) == 1
    assert _metric("drift_detector_state", {**lab, "state": "bootstrapping"}) == 0
    assert _metric("drift_reference_samples", lab) == 100
    assert _metric("drift_ert_samples", lab) == 50
    assert _metric("drift_samples_total", lab) == 0  # reference samples are not tested
    status = monitor.status()
    assert status["state"] == "armed" and status["reference_samples"] == 100
    for x in rows(6, 60, shift=3.0):
        monitor.submit(x)
    while _metric("drift_samples_total", lab) < 60 and time.monotonic() < deadline:
        time.sleep(0.02)
    monitor.stop()
    assert _metric("drift_samples_total", lab) == 60
    assert _metric("drift_events_total", lab) >= 5


def test_an_idle_worker_picks_up_the_reference_another_built(tmp_path):
    labels = ("bootidle", "v1")
    idle = DriftMonitor(labels, 10, bootstrap=BootstrapStore(tmp_path, SHA, DIM, 80),
                        build=small_build)
    idle.start()
    other = BootstrapStore(tmp_path, SHA, DIM, 80)
    for x in rows(0, 80):
        other.add(x, small_build)
    deadline = time.monotonic() + 10
    while idle.state != "armed" and time.monotonic() < deadline:
        time.sleep(0.05)
    idle.stop()
    assert idle.state == "armed"


def _drift(url: str, variant: str) -> dict:
    text = requests.get(url + "/metrics", timeout=10).text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.labels.get("variant") != variant or "le" in s.labels:
                continue
            if s.name == "drift_detector_state":
                out[s.labels["state"]] = s.value
            elif s.name.startswith("drift_"):
                out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def test_server_bootstraps_from_its_first_predictions_and_keeps_it(start_api, demo_model,
                                                                    tmp_path):
    n = 80
    state = tmp_path / "state"
    env = {"FOOD11_STATE_DIR": str(state), "FOOD11_DRIFT_ERT": "50",
           "FOOD11_DRIFT_CALIBRATION_STREAMS": "1000"}
    args = ["--drift-bootstrap-samples", str(n)]
    api = start_api(demo_model, variant="boot", workers=2, extra_args=args, env=env)
    m = _drift(api.url, "boot")
    assert (m["bootstrapping"], m["armed"], m["drift_reference_samples"]) == (1, 0, 0)
    assert requests.get(api.url + "/model", timeout=5).json()["drift"]["state"] == "bootstrapping"
    for i in range(n + 30):
        img = b64(encode(dish(80_000 + i), quality=90))
        assert requests.post(api.url + "/predict", json={"image": img}, timeout=30).ok
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = _drift(api.url, "boot")
        if m["armed"] == 1 and m["bootstrapping"] == 0:
            break
        time.sleep(0.2)
    assert (m["armed"], m["bootstrapping"], m["drift_reference_samples"]) == (1, 0, n), m
    info = requests.get(api.url + "/model", timeout=5).json()["drift"]
    assert info["state"] == "armed" and info["source"] == "bootstrap"
    assert info["reference_samples"] == n and info["ert"] == 50
    assert len(list(state.glob("drift-reference-*.npz"))) == 1
    # Drifted photos after arming: events.
    for i in range(40):
        img = b64(encode(SHIFTS["noise"](dish(90_000 + i)), quality=90))
        assert requests.post(api.url + "/predict", json={"image": img}, timeout=30).ok
    deadline = time.monotonic() + 20
    while _drift(api.url, "boot").get("drift_events_total", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _drift(api.url, "boot")["drift_events_total"] >= 2
    api.stop()
    again = start_api(demo_model, variant="boot", workers=2, extra_args=args, env=env)
    m = _drift(again.url, "boot")
    assert (m["armed"], m["bootstrapping"], m["drift_reference_samples"]) == (1, 0, n)


@pytest.mark.parametrize("env,message", [
    ({"FOOD11_DRIFT_BOOTSTRAP_SAMPLES": "50"}, "at least 78"),
    ({"FOOD11_DRIFT_BOOTSTRAP_SAMPLES": "-1"}, "greater than or equal to 0"),
    ({"FOOD11_DRIFT_ERT": "1000", "FOOD11_DRIFT_CALIBRATION_STREAMS": "5000"}, "20 x drift_ert"),
    ({"FOOD11_DRIFT_ERT": "many"}, "valid number"),
])
def test_bad_bootstrap_settings_are_refused(monkeypatch, env, message):
    from pydantic import ValidationError

    from app_api.settings import ApiSettings

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValidationError, match=message):
        ApiSettings()


def test_build_drift_reference_into_a_state_folder_arms_the_instance(tmp_path, demo_model, capsys):
    """What the deploy runs with drift_reference_images: the reference lands in the
    instance's state folder under the model's sha256, where a worker finds it."""
    from app_api.hashing import sha256_of
    from app_api.model import load_model
    from gourmetgram.cli import main as cli_main

    images = tmp_path / "images"
    images.mkdir()
    for i in range(80):
        dish(95_000 + i).save(images / f"{i}.jpg")
    state = tmp_path / "state" / "production"
    args = ["build-drift-reference", "--images", str(images), "--state-dir", str(state),
            "--model", str(demo_model), "--device", "cpu", "--ert", "50", "--streams", "1000",
            "--keep-existing"]
    assert cli_main(args) == 0
    info = load_model(demo_model, device="cpu").info
    store = BootstrapStore(state, info.sha256, info.feature_dim, 200)
    ref = store.load()
    assert ref is not None and ref.meta["source"] == "images" and len(ref.features) == 80
    monitor = DriftMonitor(("stateimg", "v1"), 10, bootstrap=store, build=small_build)
    assert monitor.state == "armed" and monitor.status()["source"] == "images"
    capsys.readouterr()
    assert cli_main(args) == 0
    assert f"kept {store.reference_path}" in capsys.readouterr().out
    assert sha256_of(demo_model)[:16] in store.reference_path.name


@pytest.mark.parametrize("extra,message", [
    ([], "give one of --out FILE or --state-dir FOLDER"),
    (["--out", "x.npz", "--state-dir", "d"], "give one of --out FILE or --state-dir FOLDER"),
])
def test_build_drift_reference_needs_one_destination(tmp_path, capsys, extra, message):
    from gourmetgram.cli import main as cli_main

    (tmp_path / "images").mkdir()
    assert cli_main(["build-drift-reference", "--images", str(tmp_path / "images"), *extra]) == 2
    assert message in capsys.readouterr().err
