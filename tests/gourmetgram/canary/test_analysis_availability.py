"""The availability checks at their boundaries (gourmetgram.canary.availability), the
time-weighted expected share of the sample-ratio check, and its calibration."""

from __future__ import annotations

import numpy as np
import pytest

from gourmetgram.canary.analysis import FAIL, INCONCLUSIVE, PASS, SKIPPED, VariantWindow
from gourmetgram.canary.availability import (
    restarts_check,
    sample_ratio_check,
    up_check,
    upstream_errors_check,
)
from gourmetgram.canary.rollout_state import RolloutState


@pytest.mark.parametrize("up, verdict", [
    (1.0, PASS), (0.75, PASS), (0.74, FAIL), (0.0, FAIL), (None, INCONCLUSIVE),
    (float("nan"), INCONCLUSIVE),
])
def test_up(up, verdict):
    r = up_check(VariantWindow(up=up), VariantWindow(up=1.0), max_down_share=0.25)
    assert r.verdict == verdict, r.line()


@pytest.mark.parametrize("restarts, verdict", [
    (None, SKIPPED), (0.0, PASS), (0.4, PASS), (1.0, FAIL), (3.0, FAIL),
    (float("nan"), INCONCLUSIVE),
])
def test_restarts(restarts, verdict):
    r = restarts_check(VariantWindow(restarts=restarts), VariantWindow(restarts=0.0), max_restarts=0)
    assert r.verdict == verdict, r.line()


def tries(n, failed):
    return VariantWindow(upstream_tries=n, upstream_failures=failed)


@pytest.mark.parametrize("canary, production, verdict", [
    (VariantWindow(), VariantWindow(), SKIPPED),
    (tries(50, 20), tries(500, 0), FAIL),  # a hanging canary: every 2nd-3rd try times out
    (tries(50, 1), tries(500, 10), PASS),  # the same rate as production
    (tries(50, 2), tries(500, 0), PASS),  # 4 % failed tries: under the 5-point tolerance
    (tries(2, 2), tries(500, 0), FAIL),  # taken out by Nginx after two failed tries
    (tries(1, 1), tries(50, 0), PASS),  # one failed try: not significant
    (tries(0, 0), tries(500, 0), INCONCLUSIVE),  # no tries on the canary
    (tries(10, 10), tries(10, 0), INCONCLUSIVE),  # too little production baseline
    (tries(float("nan"), 0), tries(500, 0), INCONCLUSIVE),
])
def test_upstream_errors(canary, production, verdict):
    r = upstream_errors_check(canary, production, alpha=0.01, min_requests=20, min_increase=0.05)
    assert r.verdict == verdict, r.line()


def srm(c, p, expected, **kw):
    return sample_ratio_check(VariantWindow(requests=c), VariantWindow(requests=p), alpha=0.01,
                              expected_share=expected, min_requests=100,
                              min_drop=kw.get("min_drop", 0.03))


def test_sample_ratio():
    assert srm(200, 800, 0.2).verdict == PASS
    bad = srm(20, 980, 0.2)  # retries moved the canary's requests to production
    assert bad.verdict == FAIL and bad.p_value < 1e-20, bad.line()
    assert "asked for 20.0%" in bad.reason
    assert srm(400, 600, 0.2).verdict == PASS  # more than its share: not a failing canary
    assert srm(5, 50, 0.2).verdict == INCONCLUSIVE
    assert srm(0, 1000, None).verdict == SKIPPED
    assert srm(0, 1000, 0.0).verdict == SKIPPED and srm(1000, 0, 1.0).verdict == SKIPPED
    # Significant but smaller than the practical tolerance (3 points): pass.
    assert srm(18_000, 82_000, 0.2).verdict == PASS


def test_sample_ratio_is_calibrated_under_the_null():
    """20,000 windows split exactly by the weight: fails at most alpha of them (one-sided
    chi-square, tolerance off), within 3 standard errors."""
    rng = np.random.default_rng(7)
    n, share, alpha = 400, 0.1, 0.01
    canary = rng.binomial(n, share, 20_000)
    fails = sum(sample_ratio_check(VariantWindow(requests=float(c)), VariantWindow(requests=float(n - c)),
                                   alpha=alpha, expected_share=share, min_requests=1,
                                   min_drop=0.0).verdict == FAIL for c in canary)
    rate = fails / canary.size
    assert rate <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / canary.size), rate


def test_expected_share_is_time_weighted_over_the_window():
    st = RolloutState(weights=[[0.0, 10], [50.0, 20]])
    assert st.expected_share(100.0, 100.0) == pytest.approx(0.15)
    assert st.expected_share(100.0, 50.0) == pytest.approx(0.20)
    assert st.expected_share(40.0, 80.0) == pytest.approx(0.10)  # before the start: first weight
    assert RolloutState().expected_share(100.0, 60.0) is None
