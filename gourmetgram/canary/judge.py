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

The shadow stage (weight 0, a share of production's requests mirrored to the canary)
is judged by ``judge_shadow``: the enabled checks that make sense without users on the
canary (its metrics then count only mirrored requests) plus ``shadow_agreement``
(gourmetgram.canary.shadow). Its analyses are analyses of the same rollout and spend
from the same alpha.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gourmetgram.canary import shadow as shadow_stage
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
    shadow: shadow_stage.ShadowWindow | None = None  # the shadow stage's paired answers


CheckFn = Callable[[VariantWindow, VariantWindow, Context], CheckResult]


def _with_settings(check, alpha: bool = True, **names: str) -> CheckFn:
    """``check`` called with the settings named in ``names`` (keyword -> settings field)
    and, for a statistical check, this analysis's alpha."""
    def run(c: VariantWindow, p: VariantWindow, x: Context) -> CheckResult:
        kw = {arg: getattr(x.settings, field) for arg, field in names.items()}
        return check(c, p, **kw, **({"alpha": x.alpha} if alpha else {}))
    return run


def _sample_ratio(c, p, x: Context) -> CheckResult:
    s = x.settings
    return sample_ratio_check(c, p, alpha=x.alpha, expected_share=x.expected_share,
                              min_requests=s.sample_ratio_min_requests,
                              min_drop=s.sample_ratio_min_drop)


CHECKS: dict[str, CheckFn] = {
    "up": _with_settings(up_check, alpha=False, max_down_share="up_max_down_share"),
    "restarts": _with_settings(restarts_check, alpha=False, max_restarts="restarts_max"),
    "upstream_errors": _with_settings(upstream_errors_check, min_requests="upstream_min_requests",
                                      min_increase="upstream_min_increase"),
    "sample_ratio": _sample_ratio,
    "error_rate": _with_settings(error_rate_check, min_requests="error_rate_min_requests",
                                 min_increase="error_rate_min_increase"),
    "latency": _with_settings(latency_check, min_requests="latency_min_requests",
                              quantiles="latency_quantiles", tolerance="latency_tolerance",
                              min_increase_s="latency_min_increase_s"),
    "confidence": _with_settings(confidence_check, min_requests="confidence_min_requests",
                                 max_drop="confidence_max_drop"),
    "class_mix": _with_settings(class_mix_check, min_requests="class_mix_min_requests",
                                min_divergence="class_mix_min_divergence"),
    "drift": _with_settings(drift_check, min_requests="drift_min_requests",
                            min_increase="drift_min_increase"),
    "accuracy": _with_settings(accuracy_check, min_labels="accuracy_min_labels",
                               max_drop="accuracy_max_drop"),
}
# accuracy is opt-in: it needs the operator's labels, which most rollouts do not wait for.
DEFAULT_CHECKS = tuple(name for name in CHECKS if name != "accuracy")
# Checks without a statistical test: they spend none of the rollout's alpha.
DETERMINISTIC = frozenset({"up", "restarts"})
# Checks of what users are served: not run in the shadow stage, where no user is on the
# canary (its mirrored requests are Nginx subrequests, not in the access log mtail reads,
# and there is no weight to compare a share with, and no user feedback).
USER_TRAFFIC_ONLY = frozenset({"upstream_errors", "sample_ratio", "accuracy"})
SHADOW_CHECK = shadow_stage.CHECK


def _agreement(c, p, x: Context) -> CheckResult:
    s = x.settings
    return shadow_stage.agreement_check(x.shadow, alpha=x.alpha, min_requests=s.shadow_min_requests,
                                        min_agreement=s.shadow_min_agreement)


def shadow_checks(checks: tuple[str, ...]) -> tuple[str, ...]:
    """The shadow stage's checks, given the enabled ones."""
    return (*(c for c in checks if c not in USER_TRAFFIC_ONLY), SHADOW_CHECK)


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


def judge_shadow(canary: VariantWindow, production: VariantWindow, settings, analysis: int,
                 shadow: shadow_stage.ShadowWindow | None) -> list[CheckResult]:
    """The ``analysis``-th analysis of a rollout, in its shadow stage."""
    names = shadow_checks(settings.checks)
    ctx = Context(settings, analysis_alpha(settings.alpha, analysis, names), None, shadow)
    return [(_agreement if name == SHADOW_CHECK else CHECKS[name])(canary, production, ctx)
            for name in names]
