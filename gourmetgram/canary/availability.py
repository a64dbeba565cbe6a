"""The canary analysis's availability checks: is the canary there at all, and does it
answer its share? A crashing or hanging canary records few requests and no 5xx of its
own (Nginx retries its requests on production), so the model checks only see "too
few requests". These checks read what is left:

- ``up``: Prometheus's scrape health of the canary's API (a dead process is down).
- ``restarts``: systemd restarts of ``food11-api@canary`` (node_exporter's systemd
  collector with ``--collector.systemd.enable-restarts-metrics``).
- ``upstream_errors``: Nginx's failed first tries per API server, counted by mtail
  from the access log (``nginx/mtail/gourmetgram.mtail``); a retried request is a
  failure of its first server even though the client got a 200.
- ``sample_ratio``: the canary's observed share of the requests against the share its
  weight asked for (chi-square, one-sided): retries and Nginx's passive health check
  move a failing canary's requests to production, so its share falls.

Same verdicts as ``gourmetgram.canary.analysis``; a source that is not deployed is ``skipped``.
"""

from __future__ import annotations

import math

from gourmetgram.canary.analysis import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    SKIPPED,
    CheckResult,
    VariantWindow,
    fisher_greater,
)


def up_check(canary: VariantWindow, production: VariantWindow, *,
             max_down_share: float) -> CheckResult:
    """Fails when the canary's scrape target was down in more than ``max_down_share``
    of the window's scrapes (``avg_over_time(up[window])``)."""
    name = "up"
    if canary.up is None or not math.isfinite(canary.up):
        return CheckResult(name, INCONCLUSIVE,
                           "no up series for the canary: Prometheus is not scraping it")
    down = 1.0 - canary.up
    if down > max_down_share:
        return CheckResult(name, FAIL, f"canary down in {down:.0%} of scrapes",
                           canary.up, production.up)
    return CheckResult(name, PASS, f"canary up in {canary.up:.0%} of scrapes",
                       canary.up, production.up)


def restarts_check(canary: VariantWindow, production: VariantWindow, *,
                   max_restarts: int) -> CheckResult:
    """Fails when systemd restarted the canary's unit more than ``max_restarts`` times
    in the window; skipped where node_exporter does not export restart counts."""
    name = "restarts"
    if canary.restarts is None:
        return CheckResult(name, SKIPPED, "no restart counter for food11-api@canary "
                           "(node_exporter --collector.systemd.enable-restarts-metrics)")
    if not math.isfinite(canary.restarts):
        return CheckResult(name, INCONCLUSIVE, "no data (NaN restart count)")
    n = round(canary.restarts)
    if n > max_restarts:
        return CheckResult(name, FAIL, f"food11-api@canary restarted {n} times",
                           float(n), production.restarts)
    return CheckResult(name, PASS, f"{n} restarts", float(n), production.restarts)


def upstream_errors_check(canary: VariantWindow, production: VariantWindow, *, alpha: float,
                          min_requests: int, min_increase: float) -> CheckResult:
    """Nginx's failed tries (connection error, timeout, 502/503/504) per try, canary
    against production: one-sided Fisher exact test, like the error rate; production
    needs ``min_requests`` tries, the canary one."""
    name = "upstream_errors"
    if canary.upstream_tries is None and production.upstream_tries is None:
        return CheckResult(name, SKIPPED, "no Nginx upstream counts (mtail not scraped)")
    cn, pn = canary.upstream_tries or 0.0, production.upstream_tries or 0.0
    cf, pf = canary.upstream_failures or 0.0, production.upstream_failures or 0.0
    if any(not math.isfinite(v) or v < 0 for v in (cn, pn, cf, pf)):
        return CheckResult(name, INCONCLUSIVE, "no data (NaN upstream counts)")
    cn, pn = round(cn), round(pn)
    cf, pf = min(round(cf), cn), min(round(pf), pn)
    # Nginx's passive health check takes a failing server out after two failed tries,
    # so a dead canary gets only a few: judged on those (Fisher is exact at any count),
    # with production's tries as the baseline that needs the minimum.
    if cn < 1 or pn < min_requests:
        return CheckResult(name, INCONCLUSIVE, f"too few Nginx tries: canary {cn}, "
                           f"production {pn}, need 1 and {min_requests}")
    c_rate, p_rate = cf / cn, pf / pn
    p = fisher_greater(cf, cn, pf, pn)
    if p < alpha and c_rate - p_rate > min_increase:
        return CheckResult(name, FAIL, f"Nginx failed {c_rate:.1%} of its tries on the canary",
                           c_rate, p_rate, p)
    return CheckResult(name, PASS, "no significant increase of failed tries", c_rate, p_rate, p)


def sample_ratio_check(canary: VariantWindow, production: VariantWindow, *, alpha: float,
                       expected_share: float | None, min_requests: int,
                       min_drop: float) -> CheckResult:
    """Sample-ratio mismatch: the chi-square goodness-of-fit test (1 degree of freedom)
    of the answered requests per variant against the weights' expected share, one-sided
    (the canary answered less than its share); fails when p < alpha and the share is
    lower by more than ``min_drop`` (absolute)."""
    name = "sample_ratio"
    if expected_share is None:
        return CheckResult(name, SKIPPED, "no weight history for this window")
    if not 0.0 < expected_share < 1.0:
        return CheckResult(name, SKIPPED, f"expected canary share {expected_share:.0%}: "
                           "nothing to compare")
    c, p = canary.requests, production.requests
    if any(v is None or not math.isfinite(v) or v < 0 for v in (c, p)):
        return CheckResult(name, INCONCLUSIVE, "no data (missing or NaN request counts)")
    n = c + p
    if n < min_requests:
        return CheckResult(name, INCONCLUSIVE,
                           f"too few requests: {n:.0f} in all, need {min_requests}")
    exp_c, exp_p = n * expected_share, n * (1 - expected_share)
    chi2 = (c - exp_c) ** 2 / exp_c + (p - exp_p) ** 2 / exp_p
    from scipy.special import chdtrc  # on first use, as in gourmetgram.canary.analysis

    two_sided = float(chdtrc(1, chi2))
    pval = two_sided / 2 if c < exp_c else 1 - two_sided / 2
    share = c / n
    details = {"chi2": chi2, "canary_requests": c, "production_requests": p}
    if pval < alpha and expected_share - share > min_drop:
        return CheckResult(name, FAIL, f"canary answered {share:.1%} of requests, its weight "
                           f"asked for {expected_share:.1%}", share, expected_share, pval, details)
    return CheckResult(name, PASS, "requests split as the weights ask", share, expected_share,
                       pval, details)
