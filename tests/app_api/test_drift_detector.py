"""The online MMD detector on features directly: the false-alarm run time matches the
configured ERT (on fresh samples, never the reference or calibration data), the
incremental statistic equals the one computed from scratch, the reference file is
checked, and the API-side monitor drops (and counts) rather than blocks."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from prometheus_client import REGISTRY

from app_api import drift
from app_api.drift import DriftReference, DriftReferenceError, OnlineMMD
from app_api.drift_monitor import DriftMonitor

DIM = 64
SHA = "ab" * 32


def features(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    """Anisotropic, skewed, non-negative: like pooled ReLU features, not a Gaussian."""
    scale = np.linspace(3.0, 0.3, DIM)
    return np.maximum(rng.standard_normal((n, DIM)) * scale + 0.5 + shift, 0.0)


def run_lengths(det: OnlineMMD, rng, runs: int, shift: float = 0.0, cap: int = 100000):
    """Samples fed until the first alarm, for ``runs`` restarts of the detector."""
    out = []
    for _ in range(runs):
        det.reset()
        n = 0
        while n < cap:
            block = features(rng, 256, shift)
            hit = None
            for i, x in enumerate(block):
                if det.update(x)[2]:
                    hit = i + 1
                    break
            if hit is not None:
                n += hit
                break
            n += len(block)
        out.append(n)
    return np.asarray(out)


ERT = 100
WINDOW = 10
REFERENCES = 4
RUNS_PER_REFERENCE = 400


@pytest.fixture(scope="module")
def null_run_lengths():
    """1600 false-alarm run lengths over 4 independently built references (the
    threshold is calibrated conditionally on one reference set, so its error varies
    from reference to reference; pooling several makes the test about the method)."""
    lengths = []
    for seed in range(REFERENCES):
        rng = np.random.default_rng(1000 + seed)
        ref = drift.build_reference(
            features(rng, 1000), model_sha256=SHA, ert=ERT, window=WINDOW, seed=seed
        )
        det = OnlineMMD(ref, seed=seed)
        lengths.append(run_lengths(det, np.random.default_rng(2000 + seed), RUNS_PER_REFERENCE))
    return np.concatenate(lengths)


def test_mean_run_time_to_false_alarm_matches_ert(null_run_lengths):
    """Mean of 1600 run lengths within 12% of ERT=100. Sampling error alone is
    100/sqrt(1600) = 2.5%; the calibration error of a 500-sample held-out pool adds
    about 5.5% per reference (measured over 5 references), 2.8% for the mean of 4:
    12% is over 3 standard deviations of the two together."""
    mean = null_run_lengths.mean()
    assert abs(mean - ERT) <= 0.12 * ERT, f"mean run time {mean:.1f}, ERT {ERT}"


def test_false_alarms_are_memoryless(null_run_lengths):
    """A geometric run time with mean ERT: P(alarm within W) = 1-(1-1/ERT)^W = 0.096
    (the steps where the calibration is per step), P(alarm within ERT) = 0.634, and
    the standard deviation is about the mean. Tolerances: 3 binomial standard errors
    (0.022 and 0.036) plus the calibration error above (measured: 0.118 and 0.658)."""
    r = null_run_lengths
    p = 1.0 / ERT
    assert abs((r <= WINDOW).mean() - (1 - (1 - p) ** WINDOW)) <= 0.035
    assert abs((r <= ERT).mean() - (1 - (1 - p) ** ERT)) <= 0.05
    assert 0.8 <= r.std() / r.mean() <= 1.2


def test_mean_shift_is_detected_within_a_few_samples():
    rng = np.random.default_rng(7)
    ref = drift.build_reference(features(rng, 600), model_sha256=SHA, ert=300, window=10, seed=3)
    det = OnlineMMD(ref, seed=0)
    delays = run_lengths(det, rng, 30, shift=1.5)
    assert np.median(delays) <= 6 and delays.max() <= 10, delays


def test_incremental_statistic_equals_the_one_from_scratch():
    rng = np.random.default_rng(3)
    ref = drift.build_reference(features(rng, 300), model_sha256=SHA, ert=50, window=5, seed=1)
    ref.thresholds[:] = np.inf  # never restart: follow one window for many steps
    det = OnlineMMD(ref, seed=0)
    r = ref.project(ref.features[ref.ref_idx])
    window = list(det.y[: ref.window - 1].copy())
    xs = features(rng, 40, shift=0.3)
    for x in xs:
        stat, _, _ = det.update(x)
        window = (window + [ref.project(x)])[-ref.window:]
        y = np.asarray(window)
        kyy = drift.kernel(y, y, ref.sigma)
        kxx = drift.kernel(r, r, ref.sigma)
        w, n = len(y), len(r)
        direct = (
            (kyy.sum() - w) / (w * (w - 1))
            - 2 * drift.kernel(y, r, ref.sigma).mean()
            + (kxx.sum() - n) / (n * (n - 1))
        )
        assert stat == pytest.approx(direct, abs=1e-9)


def test_same_inputs_and_seed_give_the_same_reference(tmp_path):
    x = features(np.random.default_rng(0), 200)
    a = drift.build_reference(x, model_sha256=SHA, ert=50, window=5, seed=4)
    b = drift.build_reference(x, model_sha256=SHA, ert=50, window=5, seed=4)
    np.testing.assert_array_equal(a.thresholds, b.thresholds)
    a.save(tmp_path / "ref.npz")
    c = DriftReference.load(tmp_path / "ref.npz")
    np.testing.assert_allclose(c.thresholds, a.thresholds)
    assert c.sigma == a.sigma and c.meta["seed"] == 4 and c.meta["projection"] == "pca"
    assert c.meta["model_sha256"] == SHA and c.ert == 50 and c.window == 5
    # The stored raw features, split and seed rebuild the same thresholds.
    d = drift.build_reference(c.features, model_sha256=SHA, ert=50, window=5, seed=4)
    np.testing.assert_array_equal(d.thresholds, a.thresholds)


@pytest.mark.parametrize("projection", ["pca", "random", "none"])
def test_every_projection_builds_and_detects(projection):
    rng = np.random.default_rng(11)
    ref = drift.build_reference(
        features(rng, 300), model_sha256=SHA, ert=100, window=10, seed=2,
        projection=projection, dim=16,
    )
    assert ref.proj_matrix.shape[1] == (DIM if projection == "none" else 16)
    delays = run_lengths(OnlineMMD(ref, seed=0), rng, 10, shift=2.0)
    assert delays.max() <= 10


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"ert": 1}, "ert must be"),
        ({"window": 1}, "window >= 2"),
        ({"projection": "umap"}, "unknown projection"),
        ({"ert": 500, "n_streams": 5000}, "too few for ERT 500"),
        ({"ert": 2, "n_streams": 1000}, "get past the first window"),
    ],
)
def test_bad_build_settings_are_refused(kwargs, message):
    x = features(np.random.default_rng(0), 200)
    with pytest.raises(DriftReferenceError, match=message):
        drift.build_reference(x, model_sha256=SHA, **kwargs)


def test_too_few_or_degenerate_features_are_refused():
    with pytest.raises(DriftReferenceError, match="at least"):
        drift.build_reference(np.ones((10, 4)), model_sha256=SHA)
    with pytest.raises(DriftReferenceError, match="identical"):
        drift.build_reference(np.ones((100, 4)), model_sha256=SHA, projection="none")
    bad = features(np.random.default_rng(0), 100)
    bad[3, 3] = np.nan
    with pytest.raises(DriftReferenceError, match="NaN"):
        drift.build_reference(bad, model_sha256=SHA)
    with pytest.raises(DriftReferenceError, match="held-out"):
        drift.build_reference(features(np.random.default_rng(0), 60), model_sha256=SHA, window=20)


@pytest.fixture(scope="module")
def saved_reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "ref.npz"
    drift.build_reference(
        features(np.random.default_rng(0), 200), model_sha256=SHA, ert=50, window=5
    ).save(path)
    return path


def _rewrite(src, dst, **changes):
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    np.savez(dst, **arrays)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda p, src: p.write_bytes(src.read_bytes()[:500]), "corrupt"),
        (lambda p, src: p.write_bytes(b"\x00" * 64), "corrupt"),
        (lambda p, src: p.write_text("not a reference"), "corrupt"),
        (lambda p, src: np.savez(p, x=np.zeros(3)), "corrupt"),
        (lambda p, src: _rewrite(src, p, meta=np.array('{"format": "other"}')), "not a"),
        (lambda p, src: _rewrite(src, p, meta=np.array("[1, 2")), "corrupt"),
        (lambda p, src: _rewrite(src, p, thresholds=np.array([np.nan])), "NaN"),
        (lambda p, src: _rewrite(src, p, ref_idx=np.array([0, 10**6])), "index"),
        (lambda p, src: _rewrite(src, p, proj_matrix=np.zeros((3, 3))), "projection"),
        (lambda p, src: _rewrite(src, p, features=np.zeros((5, DIM))), "inconsistent"),
    ],
)
def test_corrupt_reference_gives_a_clear_error(tmp_path, saved_reference, corrupt, message):
    p = tmp_path / "bad.npz"
    corrupt(p, saved_reference)
    with pytest.raises(DriftReferenceError, match=message) as e:
        DriftReference.load(p)
    assert str(p) in str(e.value)


def test_missing_reference_file_is_named(tmp_path):
    with pytest.raises(DriftReferenceError, match="does not exist"):
        DriftReference.load(tmp_path / "nope.npz")


def test_reference_for_another_model_is_refused(saved_reference):
    ref = DriftReference.load(saved_reference)
    ref.check_model(SHA, DIM)
    with pytest.raises(DriftReferenceError, match="built for model sha256 abababababab"):
        ref.check_model("cd" * 32, DIM)
    with pytest.raises(DriftReferenceError, match="-d features"):
        ref.check_model(SHA, 1280)
    with pytest.raises(DriftReferenceError, match="no penultimate features"):
        ref.check_model(SHA, None)


def _value(name, labels):
    return REGISTRY.get_sample_value(name, dict(zip(("variant", "model_version"), labels, strict=True)))


def _wait_for_samples(labels, n: int, timeout: float) -> None:
    """Polls drift_samples_total until it reaches ``n`` or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while _value("drift_samples_total", labels) < n and time.monotonic() < deadline:
        time.sleep(0.01)


def test_full_queue_drops_and_counts_without_blocking(saved_reference):
    ref = DriftReference.load(saved_reference)
    labels = ("queuetest", "v1")
    monitor = DriftMonitor(labels, 4, ref)
    release = threading.Event()
    inside = threading.Event()
    real_update = monitor.detector.update

    def slow_update(x):
        inside.set()
        release.wait(10)
        return real_update(x)

    monitor.detector.update = slow_update
    monitor.start()
    x = features(np.random.default_rng(0), 1)[0]
    monitor.submit(x)
    assert inside.wait(5)  # the worker holds one sample and is stuck on it
    done = threading.Event()

    def flood():
        for _ in range(100):
            monitor.submit(x)
        done.set()

    threading.Thread(target=flood, daemon=True).start()
    # 100 submits while the worker is stuck: they must all return (4 queued, 96 dropped).
    assert done.wait(5), "submit blocked on a full queue"
    assert _value("drift_samples_dropped_total", labels) == 96
    release.set()
    _wait_for_samples(labels, 5, timeout=10)
    assert _value("drift_samples_total", labels) == 5
    assert _value("drift_enabled", labels) == 1
    assert _value("drift_threshold", labels) == pytest.approx(ref.stationary_threshold)
    monitor.stop()
    assert not monitor._thread.is_alive()


def test_monitor_counts_events_and_observes_the_statistic(saved_reference):
    ref = DriftReference.load(saved_reference)
    labels = ("eventtest", "v1")
    monitor = DriftMonitor(labels, 1000, ref)
    monitor.start()
    xs = features(np.random.default_rng(1), 61, shift=3.0)
    xs[30, 5] = np.nan  # not tested (it would poison the window), counted as dropped
    for x in xs:
        monitor.submit(x)
    _wait_for_samples(labels, 60, timeout=20)
    monitor.stop()
    assert _value("drift_samples_total", labels) == 60
    assert _value("drift_test_stat_count", labels) == 60
    assert _value("drift_events_total", labels) >= 6  # a restart, then alarms again
    assert _value("drift_samples_dropped_total", labels) == 1


def test_monitor_tests_a_burst_in_a_few_groups_not_one_wake_up_per_sample(saved_reference):
    """Under load the drift thread takes what has queued and rests between groups: a burst
    of 200 samples submitted within one rest is tested in a handful of groups, each sample
    once and in order."""
    ref = DriftReference.load(saved_reference)
    labels = ("grouptest", "v1")
    monitor = DriftMonitor(labels, 1000, ref)
    tested, rests = [], []
    real_update, real_wait = monitor.detector.update, monitor._rest.wait

    def update(x):
        tested.append(int(x[0]))
        return real_update(x)

    def wait(timeout):
        rests.append(len(tested))
        return real_wait(timeout)

    monitor.detector.update, monitor._rest.wait = update, wait
    monitor.start()
    xs = features(np.random.default_rng(2), 200)
    xs[:, 0] = np.arange(200)  # each sample says its place
    for x in xs:
        monitor.submit(x)
    _wait_for_samples(labels, 200, timeout=20)
    monitor.stop()
    assert tested == list(range(200))
    assert 1 <= len(rests) <= 5, f"rested after each of {rests} samples"
