"""Anytime validity, by simulation: 1,000 good rollouts (canary and production drawn
from the same distributions), each judged for 20 analyses by the real checks, with
every practical tolerance off so only the statistics decide. With the alpha spent
over analyses (gourmetgram.canary.judge) the share of rollouts with any failed check in any
analysis stays under the rollout's alpha; testing every analysis afresh at alpha does
not. Independent windows are the hard case for the spending (overlapping ones are
positively correlated, which only lowers the chance of a first false failure)."""

from __future__ import annotations

import math

import numpy as np

from gourmetgram.canary.analysis import FAIL, VariantWindow
from gourmetgram.canary.analysis_settings import AnalysisSettings
from gourmetgram.canary.judge import analysis_alpha, judge

ROLLOUTS, ANALYSES, ALPHA = 1000, 20, 0.05
CLASSES = ("Bread", "Dairy", "Dessert", "Egg", "Fried", "Meat", "Noodles", "Rice", "Seafood",
           "Soup", "Vegetable")
MIX = np.array([0.2, 0.05, 0.1, 0.05, 0.1, 0.1, 0.05, 0.1, 0.05, 0.1, 0.1])
SHARE, REQUESTS, ERROR_RATE = 0.2, 600, 0.02

SETTINGS = AnalysisSettings(
    checks=("error_rate", "class_mix", "sample_ratio"), alpha=ALPHA, state_dir="/nonexistent",
    error_rate_min_requests=50, error_rate_min_increase=0.0,
    class_mix_min_requests=50, class_mix_min_divergence=0.0,
    sample_ratio_min_requests=50, sample_ratio_min_drop=0.0,
)


def windows(rng: np.random.Generator) -> tuple[VariantWindow, VariantWindow]:
    n_c = int(rng.binomial(REQUESTS, SHARE))
    out = []
    for n in (n_c, REQUESTS - n_c):
        classes = rng.multinomial(n, MIX)
        out.append(VariantWindow(requests=float(n), errors=float(rng.binomial(n, ERROR_RATE)),
                                 classes=dict(zip(CLASSES, map(float, classes), strict=True))))
    return out[0], out[1]


def false_rollout_share(spend: bool, seed: int) -> float:
    """Share of good rollouts with at least one failed check in ANALYSES analyses."""
    rng = np.random.default_rng(seed)
    fixed = SETTINGS.model_copy(update={"alpha": ALPHA})
    bad = 0
    for _ in range(ROLLOUTS):
        for k in range(1, ANALYSES + 1):
            canary, production = windows(rng)
            if spend:
                checks = judge(canary, production, SETTINGS, k, SHARE)
            else:
                # Every analysis afresh at alpha shared by the checks (the old rule).
                checks = judge(canary, production, fixed, 1, SHARE)
                per_check = ALPHA / len(SETTINGS.checks)
                checks = [c for c in checks if c.p_value is not None and c.p_value < per_check]
                if checks:
                    bad += 1
                    break
                continue
            if any(c.verdict == FAIL for c in checks):
                bad += 1
                break
    return bad / ROLLOUTS


def test_spent_alpha_sums_to_alpha():
    total = sum(analysis_alpha(ALPHA, k, ("error_rate",)) for k in range(1, 200_000))
    assert math.isclose(total, ALPHA, rel_tol=1e-4)
    assert analysis_alpha(ALPHA, 1, ("up", "restarts", "error_rate", "latency")) == \
        ALPHA * 6 / math.pi**2 / 2  # deterministic checks spend nothing


def test_false_rollbacks_over_a_whole_rollout_stay_under_alpha():
    spent = false_rollout_share(spend=True, seed=1)
    fresh = false_rollout_share(spend=False, seed=1)
    print(f"good rollouts with a failed check: spent {spent:.3f}, afresh {fresh:.3f}")
    # Tolerance: 3 binomial standard errors at alpha over 1,000 rollouts (0.021).
    assert spent <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / ROLLOUTS), spent
    # Afresh, 20 analyses at alpha each: about 1 - (1 - alpha)^20, far over alpha.
    assert fresh > 3 * ALPHA, fresh
