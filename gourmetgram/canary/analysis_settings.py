"""Every setting of the canary analysis and its controller, in one place.

Read from the environment with the ``CANARY_ANALYSIS_`` prefix (on the host: the
controller unit's EnvironmentFile, /etc/gourmetgram/canary-analysis.env), or from an
env file given with ``--settings FILE``. Bad values are refused before the controller
reads Prometheus or changes a weight. Defaults follow Flagger's where it has one
(interval 1 m, step weight 10, max weight 50, a failed-check threshold).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gourmetgram.canary.judge import CHECKS, DEFAULT_CHECKS, SHADOW_CHECK
from gourmetgram.errors import UsageError
from gourmetgram.host.layout import HostLayout

DEFAULT_STATE_DIR = Path("/var/lib/gourmetgram/canary-analysis")
# An analysis window must hold this many scrapes (increase() needs two; four give a
# rate that a single late or missed scrape does not empty).
WINDOW_SCRAPES = 4


class AnalysisSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CANARY_ANALYSIS_", extra="forbid", validate_default=True
    )

    # --- where the numbers come from -----------------------------------------------
    # Prometheus's HTTP API (the deploy binds it to the host's bind address).
    prometheus_url: str = Field("http://127.0.0.1:9090", pattern=r"^https?://")
    # Seconds to wait for one query; past it Prometheus counts as unreachable (pause).
    prometheus_timeout_s: float = Field(5.0, gt=0, le=120)
    # Extra label matchers on every API series: the scrape job of the model APIs.
    selector: str = 'job="food11"'
    # The handler whose requests are judged (the lab's /predict).
    handler: str = "/predict"

    # --- the control loop ----------------------------------------------------------
    # Seconds between two analyses (Flagger: interval 1m).
    interval_s: float = Field(60.0, gt=0, le=3600)
    # Seconds of data each analysis reads: increase(...[window]). 0 = same as the
    # interval. At least WINDOW_SCRAPES scrape intervals, else refused.
    window_s: float = Field(0.0, ge=0, le=86400)
    # Prometheus's scrape interval. 0 = the deployed one (stack.json's scrape_interval,
    # what prometheus.yml is rendered from), filled in by the on-host commands.
    scrape_interval_s: float = Field(0.0, ge=0, le=3600)
    # Longest time the rollout may hold at one weight (inconclusive or failed analyses)
    # before it is rolled back with that reason (Flagger: progressDeadlineSeconds).
    progress_deadline_s: float = Field(600.0, gt=0, le=86400)
    # Start a rollout when `gourmetgram canary ship` installs a canary (else only on
    # `gourmetgram canary start`).
    auto_start: bool = True
    # Percent of traffic added to the canary after each passing analysis (stepWeight 10).
    step_weight: int = Field(10, ge=1, le=100)
    # Highest canary weight; a passing analysis at this weight promotes (maxWeight 50).
    max_weight: int = Field(50, ge=1, le=100)
    # Failed analyses (any check failed) before the canary is rolled back (threshold).
    # Counted over the whole rollout, not reset by a passing analysis, as in Flagger.
    failed_checks_threshold: int = Field(2, ge=1, le=100)
    # Make promotion wait for `gourmetgram canary approve` (a person's go-ahead).
    manual_gate: bool = False
    # Where the controller keeps its approval file and last decision.
    state_dir: Path = DEFAULT_STATE_DIR

    # --- the shadow stage (before any user sees the canary) -------------------------
    # Passing analyses at weight 0 with part of production's predictions mirrored to the
    # canary (responses discarded) before the first weight step; 0 turns the stage off.
    shadow_intervals: int = Field(2, ge=0, le=100)
    # Percent of production's POST /predict requests mirrored (split on Nginx's request id).
    shadow_percent: int = Field(20, ge=1, le=100)
    # shadow_agreement: the canary names production's class on at least this share of
    # the mirrored inputs, else (significantly below it, exact binomial test) it fails.
    shadow_min_agreement: float = Field(0.75, gt=0, le=1)
    # Answered pairs a window needs, else inconclusive.
    shadow_min_requests: int = Field(100, ge=1)

    # --- the controller's own metrics (canary_analysis_*) -------------------------
    metrics_host: str = "127.0.0.1"
    # 0 turns the metrics endpoint off.
    metrics_port: int = Field(9310, ge=0, le=65535)

    # --- the checks ----------------------------------------------------------------
    # Which checks run (any of the names in gourmetgram.canary.judge.CHECKS; accuracy is
    # opt-in: it needs the operator's labels, which most rollouts do not wait for).
    checks: Annotated[tuple[str, ...], NoDecode] = DEFAULT_CHECKS
    # Probability that a good canary fails any statistical check in any analysis of
    # the whole rollout (anytime-valid: spent over analyses and checks, gourmetgram.canary.judge).
    alpha: float = Field(0.05, gt=0, lt=0.5)

    # up: share of the window's scrapes the canary may be down.
    up_max_down_share: float = Field(0.25, ge=0, lt=1)
    # restarts: systemd restarts of food11-api@canary tolerated in one window.
    restarts_max: int = Field(0, ge=0)
    # upstream_errors: Nginx's failed tries per try (mtail), Fisher exact test.
    upstream_min_requests: int = Field(20, ge=1)
    upstream_min_increase: float = Field(0.02, ge=0, le=1)
    # sample_ratio: canary share of answered requests vs its weight, chi-square.
    sample_ratio_min_requests: int = Field(100, ge=1)
    # Never fail for a share lower by less than this (absolute: 0.03 = 3 points).
    sample_ratio_min_drop: float = Field(0.03, ge=0, le=1)

    # error_rate: 5xx share of requests, Fisher exact test.
    error_rate_min_requests: int = Field(100, ge=1)
    # Never fail for an increase smaller than this (absolute: 0.01 = 1 point).
    error_rate_min_increase: float = Field(0.01, ge=0, le=1)

    # latency: quantiles from http_request_duration_seconds, Mann-Whitney U on buckets.
    latency_min_requests: int = Field(100, ge=1)
    latency_quantiles: Annotated[tuple[float, ...], NoDecode] = (0.95, 0.99)
    # Canary may be this much slower (relative, 0.2 = 20 %) before it can fail...
    latency_tolerance: float = Field(0.2, ge=0, le=10)
    # ...and this much (absolute seconds), since quantiles interpolate inside buckets.
    latency_min_increase_s: float = Field(0.025, ge=0)

    # confidence: mean of prediction_confidence, Welch's t-test.
    confidence_min_requests: int = Field(100, ge=1)
    # Largest tolerated drop of the mean confidence (absolute, 0..1).
    confidence_max_drop: float = Field(0.05, ge=0, le=1)

    # class_mix: predicted_class_total, chi-square with sparse classes pooled.
    class_mix_min_requests: int = Field(100, ge=1)
    # Jensen-Shannon divergence (bits, 0..1) a significant difference must exceed.
    class_mix_min_divergence: float = Field(0.02, ge=0, le=1)

    # drift: drift_events_total per drift_samples_total, Fisher exact test.
    drift_min_requests: int = Field(100, ge=1)
    drift_min_increase: float = Field(0.05, ge=0, le=1)

    # accuracy: the web app's online accuracy estimate (docs/feedback.md), z-test.
    accuracy_min_labels: int = Field(50, ge=1)
    # Largest tolerated drop of the estimated accuracy (absolute, 0..1).
    accuracy_max_drop: float = Field(0.03, ge=0, le=1)

    @field_validator("checks", "latency_quantiles", mode="before")
    @classmethod
    def _comma_list(cls, v):
        if isinstance(v, str):
            return tuple(x.strip() for x in v.split(",") if x.strip())
        return v

    @field_validator("checks")
    @classmethod
    def _known_checks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [c for c in v if c not in CHECKS]
        if SHADOW_CHECK in unknown:
            raise ValueError(f"{SHADOW_CHECK} runs in the shadow stage only, before the weighted "
                             "steps: set shadow_intervals (0 turns it off), not checks")
        if unknown:
            raise ValueError(f"unknown check {unknown[0]!r}; known: {', '.join(CHECKS)}")
        if not v:
            raise ValueError("at least one check is needed")
        if len(set(v)) != len(v):
            raise ValueError("a check is listed twice")
        return v

    @field_validator("latency_quantiles")
    @classmethod
    def _quantiles(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v or any(not 0 < q < 1 for q in v):
            raise ValueError("quantiles must be between 0 and 1, e.g. 0.95,0.99")
        return tuple(sorted(v))

    @model_validator(mode="after")
    def _weights(self) -> AnalysisSettings:
        if self.step_weight > self.max_weight:
            raise ValueError(
                f"step_weight {self.step_weight} is over max_weight {self.max_weight}"
            )
        return self

    @model_validator(mode="after")
    def _window_covers_scrapes(self) -> AnalysisSettings:
        need = WINDOW_SCRAPES * self.scrape_interval_s
        if self.scrape_interval_s and self.window < need:
            raise ValueError(
                f"window {self.window:g} s is shorter than {WINDOW_SCRAPES} scrape intervals "
                f"({WINDOW_SCRAPES} x {self.scrape_interval_s:g} s = {need:g} s): increase() "
                f"would see too few samples; set --interval/--window to at least {need:g}"
            )
        return self

    @property
    def window(self) -> float:
        return self.window_s or self.interval_s


def load_settings(env_file: Path | None = None, layout: HostLayout | None = None,
                  **overrides) -> AnalysisSettings:
    """Validated settings; any bad value is a UsageError naming the setting. Without
    ``env_file``, the host's deployed settings file (``layout.analysis_env``) is read
    when there is one; ``CANARY_ANALYSIS_*`` variables and ``overrides`` win over files."""
    if env_file is None and layout is not None and layout.analysis_env.is_file():
        env_file = layout.analysis_env
    if env_file is not None and not Path(env_file).is_file():
        raise UsageError(f"settings file {env_file} does not exist")
    try:
        kw = {"_env_file": str(env_file)} if env_file is not None else {}
        return AnalysisSettings(**kw, **{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        msg = err["msg"].removeprefix("Value error, ")
        raise UsageError(f"bad setting {where}: {msg}") from None


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration like ``15s``, ``500ms``, ``1m`` (the stack's
    ``scrape_interval`` form)."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", text.strip())
    if not m:
        raise UsageError(f"not a duration: {text!r} (expected e.g. 15s)")
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def with_deployed_scrape_interval(settings: AnalysisSettings, layout: HostLayout,
                                  env_file: Path | None = None, **overrides) -> AnalysisSettings:
    """Fills ``scrape_interval_s`` from the deployed stack data when it is not set, and
    validates the window against it (a UsageError naming both numbers)."""
    if settings.scrape_interval_s or not layout.stack_json.is_file():
        return settings
    try:
        interval = json.loads(layout.stack_json.read_text())["scrape_interval"]
    except (OSError, ValueError, KeyError) as e:
        raise UsageError(f"cannot read the scrape interval from {layout.stack_json}: {e}") from None
    return load_settings(env_file, layout, **overrides, scrape_interval_s=parse_duration(interval))
