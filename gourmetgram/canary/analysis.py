"""The canary analysis's model and HTTP checks, as pure functions of per-variant window
counts (what Prometheus's ``increase()`` gives over the analysis window).

Every check compares the canary with production and answers ``pass``, ``fail``,
``inconclusive`` or ``skipped``:

- ``inconclusive`` when either variant has fewer requests than the check's minimum,
  or when a number is missing or NaN: low traffic is never a reason to roll back.
- ``skipped`` when neither variant exports the metric at all (drift detection off),
  so an optional feature never blocks a rollout.
- ``fail`` only when the difference is both statistically significant (one-sided,
  "canary worse", at ``alpha``) and larger than the check's practical tolerance: a huge
  window makes tiny differences significant, and a tolerance alone cannot tell noise
  from a real change at small counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


def _stats():
    """scipy.stats, imported on first use: it takes seconds, and settings validation
    and the CLI's usage errors should not wait for it."""
    from scipy import stats

    return stats


PASS, FAIL, INCONCLUSIVE, SKIPPED = "pass", "fail", "inconclusive", "skipped"


@dataclass(frozen=True)
class Histogram:
    """A Prometheus histogram over a window: cumulative counts per upper bound ``le``
    (ascending, the last one may be ``inf``), plus the sum and count of observations."""

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]
    sum: float = float("nan")
    count: float = float("nan")

    @classmethod
    def from_buckets(cls, buckets: Mapping[float, float], total_sum: float = float("nan"),
                     count: float | None = None) -> Histogram:
        bounds = tuple(sorted(buckets))
        cum = tuple(float(buckets[b]) for b in bounds)
        # Counters are sampled separately, so extrapolated buckets can dip; keep them monotone.
        cum = tuple(np.maximum.accumulate(np.asarray(cum, dtype=float))) if cum else ()
        if count is None:
            count = cum[-1] if cum else float("nan")
        return cls(bounds, cum, float(total_sum), float(count))

    def per_bucket(self) -> np.ndarray:
        c = np.asarray(self.cumulative, dtype=float)
        return np.diff(np.concatenate(([0.0], c))) if c.size else c

    def is_valid(self) -> bool:
        values = (*self.cumulative, self.count)
        return bool(self.bounds) and all(math.isfinite(v) and v >= 0 for v in values)


@dataclass
class VariantWindow:
    """One variant's numbers over the analysis window. ``None`` means the metric is not
    exported at all (no series); NaN means Prometheus had no usable value."""

    requests: float = 0.0
    errors: float = 0.0
    latency: Histogram | None = None
    confidence: Histogram | None = None
    classes: dict[str, float] | None = None
    drift_events: float | None = None
    drift_samples: float | None = None
    # Availability (gourmetgram.canary.availability): share of scrapes up, systemd restarts,
    # Nginx's tries and failed tries on this variant's server.
    up: float | None = None
    restarts: float | None = None
    upstream_tries: float | None = None
    upstream_failures: float | None = None
    accuracy: OnlineAccuracy | None = None


@dataclass(frozen=True)
class OnlineAccuracy:
    """The web app's estimate for the variant's current model version (feedback_accuracy,
    _lower, _upper, _labels): weighted accuracy, its 95 % interval, labels behind it."""

    accuracy: float
    lower: float
    upper: float
    labels: float


@dataclass
class CheckResult:
    check: str
    verdict: str
    reason: str
    canary: float | None = None
    production: float | None = None
    p_value: float | None = None
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "check": self.check, "verdict": self.verdict, "reason": self.reason,
            "canary": self.canary, "production": self.production, "p_value": self.p_value,
            **({"details": self.details} if self.details else {}),
        }

    def line(self) -> str:
        nums = []
        if self.canary is not None:
            nums.append(f"canary={_fmt(self.canary)}")
        if self.production is not None:
            nums.append(f"production={_fmt(self.production)}")
        if self.p_value is not None:
            nums.append(f"p={self.p_value:.3g}")
        return f"{self.check}={self.verdict} ({', '.join(nums + [self.reason])})"


def _fmt(v: float) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _bad(*values: float | None) -> bool:
    return any(v is None or not math.isfinite(v) or v < 0 for v in values)


def fisher_greater(a_events: int, a_n: int, b_events: int, b_n: int) -> float:
    """One-sided Fisher exact p-value that group a's event rate is higher: the
    hypergeometric tail P(X >= a_events) summed from log-factorials, what
    ``scipy.stats.fisher_exact(..., alternative="greater")`` returns, far faster (the
    1,000-rollout simulation calls it 20,000 times)."""
    from scipy.special import gammaln

    total, events, draws = a_n + b_n, a_events + b_events, a_n
    if total <= 0:
        return 1.0
    k = np.arange(max(a_events, draws - (total - events), 0), min(events, draws) + 1)
    if k.size == 0:
        return 0.0

    def log_choose(n, r):
        return gammaln(n + 1) - gammaln(r + 1) - gammaln(n - r + 1)

    log_pmf = log_choose(events, k) + log_choose(total - events, draws - k) - log_choose(total, draws)
    return float(min(1.0, np.exp(log_pmf).sum()))


def chi2_homogeneity(table: np.ndarray) -> tuple[float, float, int]:
    """Pearson's chi-square test of homogeneity without continuity correction (what
    ``scipy.stats.chi2_contingency(table, correction=False)`` gives): (chi2, p, dof)."""
    from scipy.special import chdtrc

    table = np.asarray(table, dtype=float)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    chi2 = float(np.sum((table - expected) ** 2 / expected))
    dof = (table.shape[0] - 1) * (table.shape[1] - 1)
    return chi2, float(chdtrc(dof, chi2)), dof


def _too_few(check: str, canary_n: float, prod_n: float, minimum: int) -> CheckResult | None:
    if canary_n < minimum or prod_n < minimum:
        return CheckResult(
            check, INCONCLUSIVE,
            f"too few requests: canary {canary_n:.0f}, production {prod_n:.0f}, need {minimum} each",
        )
    return None


# ---- error rate -------------------------------------------------------------------

def error_rate_check(canary: VariantWindow, production: VariantWindow, *, alpha: float,
                     min_requests: int, min_increase: float) -> CheckResult:
    """One-sided Fisher exact test on the 2x2 table (errors, successes) x (canary,
    production): fails when the canary's error rate is higher with p < alpha and by more
    than ``min_increase`` (absolute, e.g. 0.01 = one point). Exact at any count, so
    the few-errors case needs no normal approximation."""
    name = "error_rate"
    if _bad(canary.requests, canary.errors, production.requests, production.errors):
        return CheckResult(name, INCONCLUSIVE, "no data (missing or NaN request counts)")
    short = _too_few(name, canary.requests, production.requests, min_requests)
    if short:
        return short
    cn, ce = round(canary.requests), min(round(canary.errors), round(canary.requests))
    pn, pe = round(production.requests), min(round(production.errors), round(production.requests))
    c_rate, p_rate = ce / cn, pe / pn
    p = fisher_greater(ce, cn, pe, pn)
    details = {"canary_requests": cn, "canary_errors": ce,
               "production_requests": pn, "production_errors": pe}
    if p < alpha and c_rate - p_rate > min_increase:
        verdict, why = FAIL, f"canary error rate higher by {c_rate - p_rate:.2%}"
    else:
        verdict, why = PASS, "no significant increase over production"
    return CheckResult(name, verdict, why, c_rate, p_rate, p, details)


# ---- latency ----------------------------------------------------------------------

def histogram_quantile(q: float, h: Histogram) -> float:
    """Prometheus's ``histogram_quantile``: linear interpolation inside the bucket that
    holds the rank; the first bucket starts at 0; a rank in the +Inf bucket gives the
    highest finite bound. NaN for an empty histogram."""
    if not h.is_valid() or not 0 <= q <= 1:
        return float("nan")
    total = h.cumulative[-1]
    if total <= 0:
        return float("nan")
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, cum in zip(h.bounds, h.cumulative, strict=True):
        if cum >= rank:
            if math.isinf(bound):
                finite = [b for b in h.bounds if math.isfinite(b)]
                return finite[-1] if finite else float("nan")
            if cum == lower_count:
                return bound
            if bound <= 0:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (cum - lower_count)
        lower_bound, lower_count = bound, cum
    return float("nan")


def mann_whitney_binned(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """One-sided Mann-Whitney U from per-bucket counts of the same buckets (ordered):
    H1 is "values in ``a`` tend to be larger". All observations in one bucket are ties.
    Returns (U of a, p-value) with the tie-corrected normal approximation and
    continuity correction (what Kayenta's judge does on bucketed latencies)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    n1, n2 = a.sum(), b.sum()
    if n1 <= 0 or n2 <= 0:
        return float("nan"), float("nan")
    below_b = np.concatenate(([0.0], np.cumsum(b)[:-1]))
    u = float(np.sum(a * (below_b + 0.5 * b)))
    n = n1 + n2
    t = a + b
    tie_term = float(np.sum(t**3 - t)) / (n * (n - 1)) if n > 1 else 0.0
    var = n1 * n2 / 12.0 * ((n + 1) - tie_term)
    if var <= 0:
        return u, 1.0
    z = (u - n1 * n2 / 2.0 - 0.5) / math.sqrt(var)
    return u, float(_stats().norm.sf(z))


def latency_check(canary: VariantWindow, production: VariantWindow, *, alpha: float,
                  min_requests: int, quantiles: Sequence[float], tolerance: float,
                  min_increase_s: float) -> CheckResult:
    """Fails when, for some quantile q, canary's q-latency exceeds production's by more
    than ``tolerance`` (relative) and ``min_increase_s`` (absolute), and the one-sided
    Mann-Whitney U test on the bucket counts says the canary is slower (p < alpha)."""
    name = "latency"
    hc, hp = canary.latency, production.latency
    if hc is None and hp is None:
        return CheckResult(name, INCONCLUSIVE, "no latency histogram for either variant")
    if hc is None or hp is None or not hc.is_valid() or not hp.is_valid():
        return CheckResult(name, INCONCLUSIVE, "no data (missing or NaN histogram)")
    if hc.bounds != hp.bounds:
        return CheckResult(name, INCONCLUSIVE, "the variants use different latency buckets")
    short = _too_few(name, hc.count, hp.count, min_requests)
    if short:
        return short
    _, p = mann_whitney_binned(hc.per_bucket(), hp.per_bucket())
    worst, details = None, {}
    for q in quantiles:
        cq, pq = histogram_quantile(q, hc), histogram_quantile(q, hp)
        details[f"p{q * 100:g}"] = {"canary": cq, "production": pq}
        if _bad(cq, pq):
            return CheckResult(name, INCONCLUSIVE, f"no data for p{q * 100:g}", details=details)
        over = cq > pq * (1 + tolerance) and cq - pq > min_increase_s
        if over and (worst is None or cq / max(pq, 1e-9) > worst[1] / max(worst[2], 1e-9)):
            worst = (q, cq, pq)
    if worst and p < alpha:
        q, cq, pq = worst
        return CheckResult(name, FAIL, f"p{q * 100:g} {cq * 1000:.0f} ms vs {pq * 1000:.0f} ms",
                           cq, pq, p, details)
    q0 = quantiles[-1]
    cq, pq = details[f"p{q0 * 100:g}"]["canary"], details[f"p{q0 * 100:g}"]["production"]
    why = "canary not slower beyond the tolerance" if worst is None else "slower but not significant"
    return CheckResult(name, PASS, f"{why} (p{q0 * 100:g} shown)", cq, pq, p, details)


# ---- mean prediction confidence ---------------------------------------------------

def histogram_mean_var(h: Histogram) -> tuple[float, float]:
    """Mean from sum/count (exact) and a variance estimated from the buckets: the spread
    of bucket midpoints around the mean plus the within-bucket variance of a uniform
    spread (width^2 / 12). The second term makes the estimate an upper bound in the
    usual case, so the test built on it is conservative."""
    counts = h.per_bucket()
    n = float(h.count)
    if n <= 0 or not math.isfinite(h.sum):
        return float("nan"), float("nan")
    mean = h.sum / n
    lowers = np.concatenate(([min(0.0, h.bounds[0])], np.asarray(h.bounds[:-1], dtype=float)))
    uppers = np.asarray(h.bounds, dtype=float)
    uppers = np.where(np.isinf(uppers), lowers, uppers)
    mids = (lowers + uppers) / 2.0
    widths = uppers - lowers
    var = float(np.sum(counts * ((mids - mean) ** 2 + widths**2 / 12.0)) / n)
    return mean, var * n / (n - 1) if n > 1 else var


def confidence_check(canary: VariantWindow, production: VariantWindow, *, alpha: float,
                     min_requests: int, max_drop: float) -> CheckResult:
    """Welch's t-test, one-sided (canary's mean confidence lower), from each histogram's
    sum, count and buckets; fails when p < alpha and the mean drops by more than
    ``max_drop`` (absolute, confidence is 0..1)."""
    name = "confidence"
    hc, hp = canary.confidence, production.confidence
    if hc is None and hp is None:
        return CheckResult(name, INCONCLUSIVE, "no confidence histogram for either variant")
    if hc is None or hp is None or not hc.is_valid() or not hp.is_valid():
        return CheckResult(name, INCONCLUSIVE, "no data (missing or NaN histogram)")
    short = _too_few(name, hc.count, hp.count, min_requests)
    if short:
        return short
    mc, vc = histogram_mean_var(hc)
    mp, vp = histogram_mean_var(hp)
    if _bad(mc, vc, mp, vp):
        return CheckResult(name, INCONCLUSIVE, "no data (NaN mean or variance)")
    nc, np_ = hc.count, hp.count
    se2 = vc / nc + vp / np_
    if se2 <= 0:
        p = 0.0 if mc < mp else 1.0
    else:
        t = (mc - mp) / math.sqrt(se2)
        # Welch-Satterthwaite degrees of freedom (max(n - 1, 1) guards a minimum of 1).
        df = se2**2 / ((vc / nc) ** 2 / max(nc - 1, 1) + (vp / np_) ** 2 / max(np_ - 1, 1))
        p = float(_stats().t.cdf(t, df))
    if p < alpha and mp - mc > max_drop:
        verdict, why = FAIL, f"mean confidence lower by {mp - mc:.3f}"
    else:
        verdict, why = PASS, "no significant drop"
    return CheckResult(name, verdict, why, mc, mp, p)


# ---- predicted-class mix ----------------------------------------------------------

def jensen_shannon(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon divergence in bits (0 = same mix, 1 = disjoint)."""
    p = np.asarray(p, dtype=float)
    q = np.asarray(q, dtype=float)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(x):
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return max(0.0, (kl(p) + kl(q)) / 2)


def class_mix_check(canary: VariantWindow, production: VariantWindow, *, alpha: float,
                    min_requests: int, min_divergence: float,
                    min_expected: float = 5.0) -> CheckResult:
    """Chi-square test of homogeneity on the 2 x classes table of predicted-class counts,
    classes with an expected count under ``min_expected`` pooled into one cell (the
    textbook validity rule); fails when p < alpha and the Jensen-Shannon divergence of
    the two mixes exceeds ``min_divergence`` (bits)."""
    name = "class_mix"
    cc, pc = canary.classes, production.classes
    if cc is None and pc is None:
        return CheckResult(name, INCONCLUSIVE, "no class counts for either variant")
    cc, pc = cc or {}, pc or {}
    if _bad(*cc.values(), *pc.values()):
        return CheckResult(name, INCONCLUSIVE, "no data (NaN class counts)")
    names = sorted(set(cc) | set(pc))
    a = np.array([cc.get(k, 0.0) for k in names])
    b = np.array([pc.get(k, 0.0) for k in names])
    short = _too_few(name, a.sum(), b.sum(), min_requests)
    if short:
        return short
    js = jensen_shannon(a, b)
    table = np.vstack([a, b])
    expected = table.sum(0) * table.sum(1)[:, None] / table.sum()
    sparse = expected.min(axis=0) < min_expected
    pooled = table[:, ~sparse]
    if sparse.any():
        pooled = np.hstack([pooled, table[:, sparse].sum(1, keepdims=True)])
    pooled = pooled[:, pooled.sum(0) > 0]
    if sparse.any() and pooled.shape[1] > 2:
        # The pooled cell can still be too small: fold it into the smallest other class.
        pexp = pooled.sum(0) * pooled.sum(1)[:, None] / pooled.sum()
        if pexp[:, -1].min() < min_expected:
            smallest = int(np.argmin(pooled[:, :-1].sum(0)))
            pooled[:, smallest] += pooled[:, -1]
            pooled = pooled[:, :-1]
    details = {"js_bits": js, "categories": int(pooled.shape[1]),
               "canary_top": names[int(a.argmax())], "production_top": names[int(b.argmax())]}
    if pooled.shape[1] < 2:
        return CheckResult(name, PASS, "one class only in both variants", js, 0.0, 1.0, details)
    chi2, p, dof = chi2_homogeneity(pooled)
    details["chi2"], details["dof"] = float(chi2), int(dof)
    if p < alpha and js > min_divergence:
        verdict, why = FAIL, f"class mix differs (JS {js:.3f} bits)"
    else:
        verdict, why = PASS, f"class mix alike (JS {js:.3f} bits)"
    return CheckResult(name, verdict, why, js, 0.0, float(p), details)


# ---- drift events -----------------------------------------------------------------

def drift_check(canary: VariantWindow, production: VariantWindow, *, alpha: float,
                min_requests: int, min_increase: float) -> CheckResult:
    """Drift events per checked sample, canary vs production: one-sided Fisher exact
    test like the error rate. Skipped when neither variant exports drift metrics, and
    while a variant's detector tests (almost) none of its requests: a freshly started
    instance bootstraps its reference from its own first predictions (docs/drift.md),
    so there is nothing to compare yet, which is no reason to hold the rollout."""
    name = "drift"
    if canary.drift_events is None and production.drift_events is None:
        return CheckResult(name, SKIPPED, "drift detection not enabled on either variant")
    ce = canary.drift_events or 0.0
    pe = production.drift_events or 0.0
    cn = canary.drift_samples if canary.drift_samples is not None else canary.requests
    pn = production.drift_samples if production.drift_samples is not None else production.requests
    if _bad(ce, pe, cn, pn):
        return CheckResult(name, INCONCLUSIVE, "no data (missing or NaN drift counts)")
    for who, w, tested in (("canary", canary, cn), ("production", production, pn)):
        if w.drift_samples is not None and tested < min_requests <= w.requests:
            return CheckResult(name, SKIPPED, f"{who}'s drift detector tested {tested:.0f} of "
                               f"its {w.requests:.0f} requests: still bootstrapping its reference")
    short = _too_few(name, cn, pn, min_requests)
    if short:
        return short
    cn, pn = round(cn), round(pn)
    ce, pe = min(round(ce), cn), min(round(pe), pn)
    c_rate, p_rate = ce / cn, pe / pn
    p = fisher_greater(ce, cn, pe, pn)
    if p < alpha and c_rate - p_rate > min_increase:
        verdict, why = FAIL, f"drift events per sample higher by {c_rate - p_rate:.3f}"
    else:
        verdict, why = PASS, "no significant increase in drift events"
    return CheckResult(name, verdict, why, c_rate, p_rate, p)


# ---- online accuracy (the operator's labels) ---------------------------------------

def accuracy_check(canary: VariantWindow, production: VariantWindow, *, alpha: float,
                   min_labels: int, max_drop: float) -> CheckResult:
    """One-sided z-test on the difference of the two weighted accuracy estimates, each
    standard error read off its 95 % interval (half-width / 1.96); fails when p < alpha
    and the canary is lower by more than ``max_drop``. Skipped when neither variant has
    an estimate (review sampling off); inconclusive below ``min_labels`` each."""
    name = "accuracy"
    ca, pa = canary.accuracy, production.accuracy
    if ca is None and pa is None:
        return CheckResult(name, SKIPPED, "no labelled review samples for either variant")
    if ca is None or pa is None:
        missing = "canary" if ca is None else "production"
        return CheckResult(name, INCONCLUSIVE, f"no labelled review samples for {missing} yet")
    if _bad(ca.accuracy, ca.lower, ca.upper, ca.labels, pa.accuracy, pa.lower, pa.upper,
            pa.labels):
        return CheckResult(name, INCONCLUSIVE, "no data (NaN accuracy estimate)")
    if ca.labels < min_labels or pa.labels < min_labels:
        return CheckResult(name, INCONCLUSIVE, f"too few labels: canary {ca.labels:.0f}, "
                           f"production {pa.labels:.0f}, need {min_labels} each")
    se2 = ((ca.upper - ca.lower) / 3.92) ** 2 + ((pa.upper - pa.lower) / 3.92) ** 2
    drop = pa.accuracy - ca.accuracy
    p = (0.0 if drop > 0 else 1.0) if se2 <= 0 else float(_stats().norm.sf(drop / math.sqrt(se2)))
    details = {"canary_labels": ca.labels, "production_labels": pa.labels,
               "canary_interval": [ca.lower, ca.upper],
               "production_interval": [pa.lower, pa.upper]}
    if p < alpha and drop > max_drop:
        verdict, why = FAIL, f"online accuracy lower by {drop:.1%}"
    else:
        verdict, why = PASS, "no significant drop in online accuracy"
    return CheckResult(name, verdict, why, ca.accuracy, pa.accuracy, p, details)

