"""The shadow stage's prediction-agreement check.

While the canary serves no user (weight 0), Nginx mirrors a sample of production's
POST /api/predict requests to it, both copies carrying ``X-Shadow-Id: $request_id``,
and each API instance logs its answers to those requests (app_api/shadow.py). Here the
two logs are joined on the id: for each mirrored request production answered in the
window, did the canary answer, and did it name the same class?

The check: one-sided exact binomial test of H0 "the canary agrees with production on
at least ``min_agreement`` of the inputs" against "less"; fail when p < alpha (the
rollout's anytime-valid level for this analysis), i.e. when agreement is clearly below
the threshold, not merely below it by noise. Fewer than ``min_requests`` answered pairs:
inconclusive. Agreement is top-1 class equality; confidence is not compared here (the
``confidence`` check does that on the canary's metrics, which in the shadow stage
come from the mirrored requests only).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from app_api.shadow import read_records
from gourmetgram.canary.analysis import FAIL, INCONCLUSIVE, PASS, CheckResult
from gourmetgram.host.layout import HostLayout

CHECK = "shadow_agreement"
# Production classes shown per class in the result and the metrics, at most (a model
# with more classes is folded into "other").
MAX_CLASSES = 64


@dataclass
class ShadowWindow:
    """Pairs of answers to the same mirrored requests over one window."""

    mirrored: int = 0  # production answered these marked requests
    answered: int = 0  # ... and the canary answered them too
    agreed: int = 0
    # production class -> answered pairs, and how many of those the canary called otherwise
    pairs_by_class: dict[str, int] = field(default_factory=dict)
    disagreed_by_class: dict[str, int] = field(default_factory=dict)
    # (production class, canary class) -> count, for the disagreements
    confusions: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def agreement(self) -> float:
        return self.agreed / self.answered if self.answered else float("nan")


def join(production: dict[str, tuple[float, str, float]], canary: dict[str, tuple[float, str, float]],
         start: float, end: float) -> ShadowWindow:
    """Pairs production's answers timed in ``[start, end]`` with the canary's answer to the
    same id (whenever it came: the mirror may finish after production)."""
    w = ShadowWindow()
    pairs: Counter = Counter()
    disagreed: Counter = Counter()
    confusions: Counter = Counter()
    for rid, (t, p_class, _) in production.items():
        if not start <= t <= end:
            continue
        w.mirrored += 1
        other = canary.get(rid)
        if other is None:
            continue
        w.answered += 1
        c_class = other[1]
        pairs[p_class] += 1
        if c_class == p_class:
            w.agreed += 1
        else:
            disagreed[p_class] += 1
            confusions[(p_class, c_class)] += 1
    keep = {c for c, _ in pairs.most_common(MAX_CLASSES - 1)} if len(pairs) > MAX_CLASSES else set(pairs)

    def fold(counts: Counter) -> dict[str, int]:
        out: Counter = Counter()
        for k, n in counts.items():
            out[k if k in keep else "other"] += n
        return dict(out)

    w.pairs_by_class, w.disagreed_by_class = fold(pairs), fold(disagreed)
    w.confusions = dict(confusions.most_common(20))
    return w


@dataclass(frozen=True)
class ShadowReader:
    """Reads both instances' shadow logs from the host's layout (FOOD11_SHADOW_DIR).

    ``grace`` seconds at the window's end are left out, so that a mirrored copy still on
    its way (at most the mirror's read timeout) is not counted as unanswered."""

    layout: HostLayout
    grace: float = 3.0

    def read(self, now: float, window: float, since: float = 0.0) -> ShadowWindow:
        end = now - self.grace
        start = max(end - window, since)
        return join(read_records(self.dir("production"), start),
                    read_records(self.dir("canary"), start - self.grace), start, end)

    def dir(self, variant: str) -> Path:
        return self.layout.shadow_dir(variant)


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    from scipy.stats import binom

    return float(binom.cdf(k, n, p))


def agreement_check(shadow: ShadowWindow | None, *, alpha: float, min_requests: int,
                    min_agreement: float) -> CheckResult:
    if shadow is None:
        return CheckResult(CHECK, INCONCLUSIVE, "no shadow data read")
    n, k = shadow.answered, shadow.agreed
    details = {"mirrored": shadow.mirrored, "answered": n, "agreed": k,
               "disagreed_by_class": shadow.disagreed_by_class,
               "pairs_by_class": shadow.pairs_by_class}
    if n < min_requests:
        return CheckResult(CHECK, INCONCLUSIVE,
                           f"too few mirrored requests answered by both: {n} of {shadow.mirrored} "
                           f"mirrored, need {min_requests}", details=details)
    rate = k / n
    p = binom_cdf(k, n, min_agreement)
    if not math.isfinite(p):
        return CheckResult(CHECK, INCONCLUSIVE, "no data (NaN p-value)", details=details)
    worst = sorted(shadow.disagreed_by_class.items(), key=lambda kv: -kv[1])[:3]
    where = ", ".join(f"{c}: {d} of {shadow.pairs_by_class.get(c, 0)}" for c, d in worst)
    if p < alpha:
        return CheckResult(CHECK, FAIL, f"canary agrees with production on {rate:.1%} of "
                           f"{n} mirrored requests, below {min_agreement:.0%} (disagreements: {where})",
                           rate, min_agreement, p, details)
    return CheckResult(CHECK, PASS, f"agreement {rate:.1%} of {n} mirrored requests "
                       f"(threshold {min_agreement:.0%})", rate, min_agreement, p, details)
