"""Every setting of the canary analysis and its controller, in one place.

Read from the environment with the ``CANARY_ANALYSIS_`` prefix (on the host: the
controller unit's EnvironmentFile, /etc/gourmetgram/canary-analysis.env), or from an
env file given with ``--settings FILE``. Bad values are refused before the controller
reads Prometheus or changes a weight. Defaults follow Flagger's where it has one
(interval 1 m, step weight 10, max weight 50, a failed-check threshold).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gourmetgram.analysis import CHECKS, DEFAULT_CHECKS
from gourmetgram.errors import UsageError

DEFAULT_STATE_DIR = Path("/var/lib/gourmetgram/canary-analysis")


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
    # interval. Give it at least four scrape intervals so increase() has samples.
    window_s: float = Field(0.0, ge=0, le=86400)
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

    # --- the controller's own metrics (canary_analysis_*) -------------------------
    metrics_host: str = "127.0.0.1"
    # 0 turns the metrics endpoint off.
    metrics_port: int = Field(9310, ge=0, le=65535)

    # --- the checks ----------------------------------------------------------------
    # Which checks run (any of: error_rate, latency, confidence, class_mix, drift, and the
    # opt-in accuracy).
    checks: Annotated[tuple[str, ...], NoDecode] = DEFAULT_CHECKS
    # One-sided significance level of every check's "canary is worse" test. With a
    # threshold of 2 failed analyses, a good canary is rolled back by chance with a
    # probability of roughly (checks x alpha)^2 per pair of analyses.
    alpha: float = Field(0.01, gt=0, lt=0.5)

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

    @property
    def window(self) -> float:
        return self.window_s or self.interval_s


def load_settings(env_file: Path | None = None, **overrides) -> AnalysisSettings:
    """Validated settings; any bad value is a UsageError naming the setting."""
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
