"""Each statistical rule at its boundary, plus calibration: under the null (same
distribution for both variants) a check fails at most about ``alpha`` of the time, and
it catches a clear difference with enough samples. Seeds are fixed; tolerances stated."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from gourmetgram.canary.analysis import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    SKIPPED,
    Histogram,
    VariantWindow,
    class_mix_check,
    confidence_check,
    drift_check,
    error_rate_check,
    histogram_mean_var,
    histogram_quantile,
    jensen_shannon,
    latency_check,
    mann_whitney_binned,
)
from gourmetgram.canary.analysis_settings import AnalysisSettings
from gourmetgram.canary.judge import judge

ALPHA = 0.01
LAT_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
              math.inf)
CONF_BOUNDS = tuple(round(0.1 * i, 1) for i in range(11)) + (math.inf,)
NAN = float("nan")


def hist_from_samples(samples, bounds) -> Histogram:
    samples = np.asarray(samples, dtype=float)
    cum = {b: float(np.sum(samples <= b)) for b in bounds}
    return Histogram.from_buckets(cum, float(samples.sum()), float(samples.size))


def err(c_req, c_err, p_req, p_err, **kw):
    return error_rate_check(
        VariantWindow(requests=c_req, errors=c_err), VariantWindow(requests=p_req, errors=p_err),
        alpha=kw.get("alpha", ALPHA), min_requests=kw.get("min_requests", 100),
        min_increase=kw.get("min_increase", 0.01))


# ---- error rate -----------------------------------------------------------------

@pytest.mark.parametrize("case, args, verdict", [
    ("equal rates", (1000, 20, 1000, 20), PASS),
    ("equal rates, unequal traffic", (500, 10, 5000, 100), PASS),
    ("no errors at all", (500, 0, 5000, 0), PASS),
    ("canary better", (1000, 0, 1000, 50), PASS),
    ("clear difference", (500, 50, 5000, 50), FAIL),
    ("canary all errors", (100, 100, 900, 0), FAIL),
    ("below min requests", (99, 99, 5000, 0), INCONCLUSIVE),
    ("production below min", (500, 50, 50, 0), INCONCLUSIVE),
    ("NaN canary requests", (NAN, 0, 5000, 0), INCONCLUSIVE),
    ("NaN errors", (500, NAN, 5000, 0), INCONCLUSIVE),
    ("empty window", (0, 0, 0, 0), INCONCLUSIVE),
])
def test_error_rate_boundaries(case, args, verdict):
    assert err(*args).verdict == verdict, case


def test_error_rate_significant_but_below_min_increase_passes():
    # 0.6 % vs 0.2 % on 50,000 requests each is significant, but under the 1-point floor.
    r = err(50_000, 300, 50_000, 100)
    assert r.p_value < 1e-6 and r.verdict == PASS
    assert err(50_000, 300, 50_000, 100, min_increase=0.001).verdict == FAIL


def test_error_rate_exactly_min_requests_is_judged():
    assert err(100, 30, 100, 0).verdict == FAIL
    assert err(99, 30, 100, 0).verdict == INCONCLUSIVE


def test_error_rate_calibration_and_power():
    rng = np.random.default_rng(1)
    null_fails = sum(
        err(500, rng.binomial(500, 0.03), 2000, rng.binomial(2000, 0.03)).verdict == FAIL
        for _ in range(1000))
    # Fisher's exact test is conservative: at most alpha, plus 1 point of sampling slack.
    assert null_fails / 1000 <= ALPHA + 0.01
    power = sum(
        err(500, rng.binomial(500, 0.10), 2000, rng.binomial(2000, 0.03)).verdict == FAIL
        for _ in range(300))
    assert power / 300 >= 0.95


# ---- latency --------------------------------------------------------------------

def test_histogram_quantile_follows_prometheus():
    h = Histogram.from_buckets({0.1: 50, 0.2: 100, math.inf: 100})
    assert histogram_quantile(0.5, h) == pytest.approx(0.1)
    assert histogram_quantile(0.75, h) == pytest.approx(0.15)
    assert histogram_quantile(0.25, h) == pytest.approx(0.05)  # the first bucket starts at 0
    tail = Histogram.from_buckets({0.1: 50, 0.2: 60, math.inf: 100})
    assert histogram_quantile(0.99, tail) == 0.2  # rank in +Inf: highest finite bound
    assert math.isnan(histogram_quantile(0.5, Histogram.from_buckets({0.1: 0, math.inf: 0})))
    assert math.isnan(histogram_quantile(0.5, Histogram.from_buckets({0.1: NAN, math.inf: NAN})))


def test_mann_whitney_binned_matches_scipy_on_expanded_ties():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 30, 12).astype(float)
    b = rng.integers(0, 30, 12).astype(float)
    xa = np.repeat(np.arange(12), a.astype(int))
    xb = np.repeat(np.arange(12), b.astype(int))
    u, p = mann_whitney_binned(a, b)
    ref = stats.mannwhitneyu(xa, xb, alternative="greater", method="asymptotic", use_continuity=True)
    assert u == pytest.approx(ref.statistic)
    assert p == pytest.approx(ref.pvalue, rel=1e-9)


def lat(canary_samples, prod_samples, **kw):
    return latency_check(
        VariantWindow(latency=hist_from_samples(canary_samples, LAT_BOUNDS)),
        VariantWindow(latency=hist_from_samples(prod_samples, LAT_BOUNDS)),
        alpha=ALPHA, min_requests=kw.get("min_requests", 100), quantiles=(0.95, 0.99),
        tolerance=kw.get("tolerance", 0.2), min_increase_s=kw.get("min_increase_s", 0.025))


def test_latency_boundaries():
    rng = np.random.default_rng(3)
    base = lambda n: rng.lognormal(np.log(0.04), 0.4, n)  # noqa: E731 - a small sampler
    assert lat(base(400), base(4000)).verdict == PASS
    slow = lat(base(400) * 3, base(4000))
    assert slow.verdict == FAIL and slow.canary > slow.production * 1.2
    assert lat(base(400) * 0.5, base(4000)).verdict == PASS  # faster canary
    assert lat(base(50) * 3, base(4000)).verdict == INCONCLUSIVE  # too few requests
    # 10 % slower is within the 20 % tolerance, however many samples there are.
    assert lat(base(20000) * 1.1, base(20000)).verdict == PASS


def test_latency_missing_or_nan_is_inconclusive():
    h = hist_from_samples([0.05] * 200, LAT_BOUNDS)
    nan_h = Histogram.from_buckets({b: NAN for b in LAT_BOUNDS})
    kw = dict(alpha=ALPHA, min_requests=100, quantiles=(0.95,), tolerance=0.2, min_increase_s=0.0)
    assert latency_check(VariantWindow(latency=nan_h), VariantWindow(latency=h), **kw).verdict == INCONCLUSIVE
    assert latency_check(VariantWindow(), VariantWindow(latency=h), **kw).verdict == INCONCLUSIVE
    assert latency_check(VariantWindow(), VariantWindow(), **kw).verdict == INCONCLUSIVE


def test_latency_calibration():
    rng = np.random.default_rng(4)
    fails = sum(lat(rng.lognormal(np.log(0.04), 0.6, 300), rng.lognormal(np.log(0.04), 0.6, 3000),
                    tolerance=0.0, min_increase_s=0.0).verdict == FAIL for _ in range(300))
    # With no tolerance the U test alone decides: false failures at most alpha + 2 points.
    assert fails / 300 <= ALPHA + 0.02


# ---- confidence -----------------------------------------------------------------

def conf(canary_samples, prod_samples, **kw):
    return confidence_check(
        VariantWindow(confidence=hist_from_samples(canary_samples, CONF_BOUNDS)),
        VariantWindow(confidence=hist_from_samples(prod_samples, CONF_BOUNDS)),
        alpha=ALPHA, min_requests=kw.get("min_requests", 100), max_drop=kw.get("max_drop", 0.05))


def test_confidence_boundaries():
    rng = np.random.default_rng(5)
    good = lambda n: rng.beta(8, 2, n)  # noqa: E731 - mean 0.8
    assert conf(good(300), good(3000)).verdict == PASS
    low = conf(rng.beta(2, 8, 300), good(3000))  # mean 0.2: a random-weights model
    assert low.verdict == FAIL and low.production - low.canary > 0.5
    assert conf(rng.beta(9, 1, 300), good(3000)).verdict == PASS  # more confident canary
    assert conf(rng.beta(2, 8, 60), good(3000)).verdict == INCONCLUSIVE
    # 0.03 lower on 50,000 samples each: significant, but under the 0.05 tolerance.
    r = conf(np.clip(good(50_000) - 0.03, 0, 1), good(50_000))
    assert r.p_value < 1e-6 and r.verdict == PASS


def test_confidence_nan_is_inconclusive():
    h = hist_from_samples([0.8] * 200, CONF_BOUNDS)
    bad = Histogram(h.bounds, h.cumulative, NAN, h.count)
    r = confidence_check(VariantWindow(confidence=bad), VariantWindow(confidence=h),
                         alpha=ALPHA, min_requests=100, max_drop=0.05)
    assert r.verdict == INCONCLUSIVE


def test_confidence_variance_from_buckets_is_conservative():
    rng = np.random.default_rng(6)
    x = rng.beta(5, 3, 5000)
    mean, var = histogram_mean_var(hist_from_samples(x, CONF_BOUNDS))
    assert mean == pytest.approx(x.mean(), rel=1e-9)
    # Midpoint spread plus width^2/12 is at least the true variance, and not far above it.
    assert np.var(x, ddof=1) <= var <= np.var(x, ddof=1) + 0.1**2 / 12 + 1e-3


def test_confidence_calibration():
    rng = np.random.default_rng(7)
    fails = sum(conf(rng.beta(6, 2, 200), rng.beta(6, 2, 2000), max_drop=0.0).verdict == FAIL
                for _ in range(500))
    assert fails / 500 <= ALPHA + 0.01


# ---- class mix ------------------------------------------------------------------

CLASSES = [f"c{i}" for i in range(11)]


def counts(rng, n, probs):
    return dict(zip(CLASSES, rng.multinomial(n, probs).astype(float), strict=True))


def mix(c, p, **kw):
    return class_mix_check(VariantWindow(classes=c), VariantWindow(classes=p), alpha=ALPHA,
                           min_requests=kw.get("min_requests", 100),
                           min_divergence=kw.get("min_divergence", 0.02))


def test_class_mix_boundaries():
    rng = np.random.default_rng(8)
    probs = np.array([30, 20, 10, 10, 8, 7, 5, 4, 3, 2, 1], dtype=float)
    probs /= probs.sum()
    assert mix(counts(rng, 400, probs), counts(rng, 4000, probs)).verdict == PASS
    one_class = {"c3": 400.0}  # a broken model that always answers the same class
    r = mix(one_class, counts(rng, 4000, probs))
    assert r.verdict == FAIL and r.canary > 0.2
    assert mix({"c3": 90.0}, counts(rng, 4000, probs)).verdict == INCONCLUSIVE
    assert mix(None, None).verdict == INCONCLUSIVE
    assert mix({"c1": NAN}, counts(rng, 4000, probs)).verdict == INCONCLUSIVE


def test_class_mix_pools_sparse_classes():
    # A class seen twice by the canary only would break a naive chi-square (expected ~0.2).
    prod = {"a": 2000.0, "b": 2000.0}
    canary = {"a": 199.0, "b": 199.0, "rare": 2.0}
    r = mix(canary, prod)
    assert r.verdict == PASS and r.details["categories"] == 2


def test_class_mix_significant_but_small_divergence_passes():
    rng = np.random.default_rng(9)
    p1 = np.full(11, 1 / 11)
    p2 = p1.copy()
    p2[0] += 0.02
    p2[1] -= 0.02
    r = mix(counts(rng, 200_000, p2), counts(rng, 200_000, p1))
    assert r.p_value < 1e-6 and r.verdict == PASS and r.canary < 0.02


def test_jensen_shannon_bounds():
    assert jensen_shannon([1, 0], [0, 1]) == pytest.approx(1.0)
    assert jensen_shannon([3, 1], [6, 2]) == pytest.approx(0.0, abs=1e-12)


def test_class_mix_calibration():
    rng = np.random.default_rng(10)
    probs = np.array([30, 20, 10, 10, 8, 7, 5, 4, 3, 2, 1], dtype=float)
    probs /= probs.sum()
    fails = sum(mix(counts(rng, 300, probs), counts(rng, 3000, probs), min_divergence=0).verdict == FAIL
                for _ in range(500))
    assert fails / 500 <= ALPHA + 0.01


# ---- drift ----------------------------------------------------------------------

def test_drift_rules():
    kw = dict(alpha=ALPHA, min_requests=100, min_increase=0.05)
    assert drift_check(VariantWindow(requests=500), VariantWindow(requests=500), **kw).verdict == SKIPPED
    same = drift_check(VariantWindow(drift_events=5, drift_samples=500),
                       VariantWindow(drift_events=50, drift_samples=5000), **kw)
    assert same.verdict == PASS
    worse = drift_check(VariantWindow(drift_events=150, drift_samples=500),
                        VariantWindow(drift_events=50, drift_samples=5000), **kw)
    assert worse.verdict == FAIL
    few = drift_check(VariantWindow(drift_events=50, drift_samples=50),
                      VariantWindow(drift_events=0, drift_samples=5000), **kw)
    assert few.verdict == INCONCLUSIVE
    nan = drift_check(VariantWindow(drift_events=NAN, drift_samples=500),
                      VariantWindow(drift_events=0, drift_samples=500), **kw)
    assert nan.verdict == INCONCLUSIVE
    # Only production exports drift metrics (canary's detector off): counted as 0 events
    # on the canary's requests, so it can pass but never fail.
    half = drift_check(VariantWindow(requests=500), VariantWindow(drift_events=5, drift_samples=500), **kw)
    assert half.verdict == PASS



@pytest.mark.parametrize("bootstrapping", ["canary", "production"])
def test_drift_is_skipped_while_a_detector_bootstraps_its_reference(bootstrapping):
    """A fresh instance answers requests but tests no drift samples until its reference
    is built from its first predictions: nothing to compare, so no hold."""
    kw = dict(alpha=ALPHA, min_requests=100, min_increase=0.05)
    armed = VariantWindow(requests=500, drift_events=5, drift_samples=500)
    fresh = VariantWindow(requests=500, drift_events=0, drift_samples=99)
    pair = (fresh, armed) if bootstrapping == "canary" else (armed, fresh)
    r = drift_check(*pair, **kw)
    assert r.verdict == SKIPPED and r.reason.startswith(f"{bootstrapping}'s drift detector"), r
    # At 100 tested samples it is judged again; below 100 requests it is low traffic.
    tested = VariantWindow(requests=500, drift_events=0, drift_samples=100)
    assert drift_check(tested, armed, **kw).verdict == PASS
    quiet = VariantWindow(requests=99, drift_events=0, drift_samples=0)
    assert drift_check(quiet, armed, **kw).verdict == INCONCLUSIVE


def test_judge_runs_only_enabled_checks():
    s = AnalysisSettings(checks=("error_rate", "drift"), state_dir="/nonexistent")
    results = judge(VariantWindow(requests=500), VariantWindow(requests=500), s)
    assert [r.check for r in results] == ["error_rate", "drift"]
    assert [r.verdict for r in results] == [PASS, SKIPPED]


def test_confidence_with_a_minimum_of_one_request_does_not_crash():
    one = hist_from_samples([0.2], CONF_BOUNDS)
    many = hist_from_samples([0.8] * 50, CONF_BOUNDS)
    r = confidence_check(VariantWindow(confidence=one), VariantWindow(confidence=many),
                         alpha=ALPHA, min_requests=1, max_drop=0.05)
    assert r.verdict in (PASS, FAIL) and 0 <= r.p_value <= 1


def test_fast_fisher_and_chi_square_equal_scipy():
    """The checks' own Fisher tail and chi-square (fast enough for the 1,000-rollout
    simulation) give SciPy's numbers."""
    from gourmetgram.canary.analysis import chi2_homogeneity, fisher_greater

    rng = np.random.default_rng(3)
    for _ in range(200):
        an, bn = int(rng.integers(1, 800)), int(rng.integers(1, 800))
        ae, be = int(rng.integers(0, an + 1)), int(rng.integers(0, bn + 1))
        want = stats.fisher_exact([[ae, an - ae], [be, bn - be]], alternative="greater").pvalue
        assert fisher_greater(ae, an, be, bn) == pytest.approx(want, rel=1e-7, abs=1e-12)
        table = rng.integers(1, 200, size=(2, int(rng.integers(2, 11))))
        chi2, p, dof, _ = stats.chi2_contingency(table, correction=False)
        assert chi2_homogeneity(table) == pytest.approx((chi2, p, dof), rel=1e-9)
