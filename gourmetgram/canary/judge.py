"""Which checks judge a canary, and at which significance level.

``CHECKS`` is the registry: a name users put in ``CANARY_ANALYSIS_CHECKS`` mapped to a
function ``(canary window, production window, Context) -> CheckResult``. A new check
is one function and one entry here.

Anytime-valid judgement: the controller judges the same rollout again every interval,
so testing each analysis at ``alpha`` would let the chance of a false rollback grow
with the number of analyses. Instead the k-th analysis of a rollout spends
``alpha * 6 / (pi^2 k^2)`` (these shares sum to ``alpha`` over k = 1, 2, ...), split
evenly over the enabled statistical checks. By the union bound a good canary fails any
check in any analysis of the whole rollout with probability at most ``alpha``, however
many analyses it takes and however the overlapping windows depend on each other (an
alpha-spending, always-valid test; tests/gourmetgram/canary/test_analysis_sequential.py
simulates it). Deterministic checks (``up``, ``restarts``) spend no alpha.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gourmetgram.canary.analysis import (
    CheckResult,
    VariantWindow,
    accuracy_check,
    class_mix_check,
    confidence_check,
    drift_check,
    error_rate_check,
    latency_check,
)
from gourmetgram.canary.availability import (
    restarts_check,
    sample_ratio_check,
    up_check,
    upstream_errors_check,
)


@dataclass(frozen=True)
class Context:
    """What a check gets besides the two windows."""

    settings: Any  # AnalysisSettings (not imported: the settings import this registry)
    alpha: float  # this analysis's significance level for one statistical check
    expected_share: float | None = None  # canary share the weights asked for


CheckFn = Callable[[VariantWindow, VariantWindow, Context], CheckResult]


def _error_rate(c, p, x: Context) -> CheckResult:
    s = x.settings
    return error_rate_check(c, p, alpha=x.alpha, min_requests=s.error_rate_min_requests,
                            min_increase=s.error_rate_min_increase)


def _latency(c, p, x: Context) -> CheckResult:
    s = x.settings
    return latency_check(c, p, alpha=x.alpha, min_requests=s.latency_min_requests,
                         quantiles=s.latency_quantiles, tolerance=s.latency_tolerance,
                         min_increase_s=s.latency_min_increase_s)


def _confidence(c, p, x: Context) -> CheckResult:
    s = x.settings
    return confidence_check(c, p, alpha=x.alpha, min_requests=s.confidence_min_requests,
                            max_drop=s.confidence_max_drop)


def _class_mix(c, p, x: Context) -> CheckResult:
    s = x.settings
    return class_mix_check(c, p, alpha=x.alpha, min_requests=s.class_mix_min_requests,
                           min_divergence=s.class_mix_min_divergence)


def _drift(c, p, x: Context) -> CheckResult:
    s = x.settings
    return drift_check(c, p, alpha=x.alpha, min_requests=s.drift_min_requests,
                       min_increase=s.drift_min_increase)


def _accuracy(c, p, x: Context) -> CheckResult:
    s = x.settings
    return accuracy_check(c, p, alpha=x.alpha, min_labels=s.accuracy_min_labels,
                          max_drop=s.accuracy_max_drop)


def _up(c, p, x: Context) -> CheckResult:
    return up_check(c, p, max_down_share=x.settings.up_max_down_share)


def _restarts(c, p, x: Context) -> CheckResult:
    return restarts_check(c, p, max_restarts=x.settings.restarts_max)


def _upstream_errors(c, p, x: Context) -> CheckResult:
    s = x.settings
    return upstream_errors_check(c, p, alpha=x.alpha, min_requests=s.upstream_min_requests,
                                 min_increase=s.upstream_min_increase)


def _sample_ratio(c, p, x: Context) -> CheckResult:
    s = x.settings
    return sample_ratio_check(c, p, alpha=x.alpha, expected_share=x.expected_share,
                              min_requests=s.sample_ratio_min_requests,
                              min_drop=s.sample_ratio_min_drop)


CHECKS: dict[str, CheckFn] = {
    "up": _up,
    "restarts": _restarts,
    "upstream_errors": _upstream_errors,
    "sample_ratio": _sample_ratio,
    "error_rate": _error_rate,
    "latency": _latency,
    "confidence": _confidence,
    "class_mix": _class_mix,
    "drift": _drift,
    "accuracy": _accuracy,
}
# accuracy is opt-in: it needs the operator's labels, which most rollouts do not wait for.
DEFAULT_CHECKS = tuple(name for name in CHECKS if name != "accuracy")
# Checks without a statistical test: they spend none of the rollout's alpha.
DETERMINISTIC = frozenset({"up", "restarts"})


def analysis_alpha(alpha: float, k: int, checks: tuple[str, ...]) -> float:
    """One statistical check's significance level in the k-th analysis (k >= 1)."""
    tested = sum(1 for c in checks if c not in DETERMINISTIC) or 1
    return alpha * 6.0 / (math.pi**2 * max(1, k) ** 2) / tested


def judge(canary: VariantWindow, production: VariantWindow, settings, analysis: int = 1,
          expected_share: float | None = None) -> list[CheckResult]:
    """Runs the enabled checks of the ``analysis``-th analysis of a rollout."""
    ctx = Context(settings, analysis_alpha(settings.alpha, analysis, settings.checks),
                  expected_share)
    return [CHECKS[name](canary, production, ctx) for name in settings.checks]
