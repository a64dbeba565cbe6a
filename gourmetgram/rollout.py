"""The canary controller: every interval it reads both variants' numbers from
Prometheus, judges them (``gourmetgram.analysis``), decides advance, hold, promote or
roll back, and acts through an actuator: on a host, the canary library that
``gourmetgram canary set/promote/rollback`` use, so a person and the controller take
the same code path. Prometheus unreachable pauses it without touching the weights.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from gourmetgram import canary
from gourmetgram.analysis import FAIL, INCONCLUSIVE, PASS, SKIPPED, CheckResult, judge
from gourmetgram.analysis_settings import AnalysisSettings
from gourmetgram.hostlayout import HostLayout, host_layout
from gourmetgram.promclient import (
    PromClient,
    PrometheusQueryError,
    PrometheusUnavailable,
    WindowReader,
)

log = logging.getLogger("gourmetgram.rollout")

ADVANCE, HOLD, PROMOTE, ROLLBACK, PAUSE, WAIT = (
    "advance", "hold", "promote", "rollback", "pause", "wait-approval")
STOPPED = "stopped"
ACTIONS = (ADVANCE, HOLD, PROMOTE, ROLLBACK, PAUSE, WAIT, STOPPED)
VERDICTS = (PASS, FAIL, INCONCLUSIVE, SKIPPED)
APPROVAL_FILE = "approved"
DECISIONS_FILE = "decisions.jsonl"


class Actuator(Protocol):
    """What the controller needs from the canary routing; nothing else."""

    def weight(self) -> int: ...
    def set_weight(self, weight: int, reason: str) -> None: ...
    def promote(self, reason: str) -> None: ...
    def rollback(self, reason: str) -> None: ...


class CanaryLibraryActuator:
    """The one seam to ``gourmetgram.canary`` (the routing library): the same calls
    that ``gourmetgram canary set/promote/rollback`` make, on the given host layout
    and service manager (a test stack passes its own)."""

    def __init__(self, layout: HostLayout | None = None, services: canary.Services | None = None):
        self.layout = layout or host_layout()
        self.services = services or canary.SystemdServices(self.layout)

    def weight(self) -> int:
        return canary.load_state(self.layout).canary_weight

    def set_weight(self, weight: int, reason: str) -> None:
        canary.set_weight(weight, reason, layout=self.layout, services=self.services)

    def promote(self, reason: str) -> None:
        canary.promote(reason, layout=self.layout, services=self.services)

    def rollback(self, reason: str) -> None:
        canary.rollback(reason, layout=self.layout, services=self.services)


@dataclass
class Decision:
    action: str
    weight_before: int
    weight_after: int
    reason: str
    checks: list[CheckResult] = field(default_factory=list)
    failed_analyses: int = 0
    at: float = field(default_factory=time.time)

    def line(self) -> str:
        head = (f"decision={self.action} weight={self.weight_before}->{self.weight_after} "
                f"failed={self.failed_analyses} reason=\"{self.reason}\"")
        return head + "".join(f" | {c.line()}" for c in self.checks)

    def as_dict(self) -> dict:
        return {
            "at": round(self.at, 3), "action": self.action,
            "weight_before": self.weight_before, "weight_after": self.weight_after,
            "failed_analyses": self.failed_analyses, "reason": self.reason,
            "checks": [c.as_dict() for c in self.checks],
        }


class AnalysisMetrics:
    """The ``canary_analysis_*`` metrics, in a registry of their own."""

    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.last_decision = Gauge("canary_analysis_last_decision",
                                   "1 for the action of the last analysis, 0 for the others.",
                                   ("decision",), registry=r)
        self.decisions = Counter("canary_analysis_decisions_total", "Analyses by decision.",
                                 ("decision",), registry=r)
        self.check_verdict = Gauge("canary_analysis_check_verdict",
                                   "1 for each check's verdict in the last analysis.",
                                   ("check", "verdict"), registry=r)
        self.check_p = Gauge("canary_analysis_check_p_value",
                             "One-sided p-value of each check's test in the last analysis.",
                             ("check",), registry=r)
        self.check_value = Gauge("canary_analysis_check_value",
                                 "The compared number of each check, per variant.",
                                 ("check", "variant"), registry=r)
        self.weight = Gauge("canary_analysis_weight", "Canary weight after the last analysis (%).",
                            registry=r)
        self.step = Gauge("canary_analysis_step", "Weight steps taken in this rollout.", registry=r)
        self.failed = Gauge("canary_analysis_failed_checks",
                            "Failed analyses in this rollout (rollback at the threshold).", registry=r)
        self.last_time = Gauge("canary_analysis_last_decision_timestamp_seconds",
                               "When the last analysis decided.", registry=r)
        self.prometheus_up = Gauge("canary_analysis_prometheus_up",
                                   "1 when the last analysis could read Prometheus.", registry=r)
        for a in ACTIONS:
            self.last_decision.labels(a).set(0)
            self.decisions.labels(a)
        self._server = None

    def observe(self, d: Decision, step: int) -> None:
        for a in ACTIONS:
            self.last_decision.labels(a).set(1 if a == d.action else 0)
        self.decisions.labels(d.action).inc()
        self.weight.set(d.weight_after)
        self.step.set(step)
        self.failed.set(d.failed_analyses)
        self.last_time.set(d.at)
        self.prometheus_up.set(0 if d.action == PAUSE else 1)
        for c in d.checks:
            for v in VERDICTS:
                self.check_verdict.labels(c.check, v).set(1 if v == c.verdict else 0)
            if c.p_value is not None:
                self.check_p.labels(c.check).set(c.p_value)
            for variant, value in (("canary", c.canary), ("production", c.production)):
                if value is not None:
                    self.check_value.labels(c.check, variant).set(value)

    def serve(self, host: str, port: int) -> int:
        """Starts the HTTP endpoint; returns the port (useful when ``port`` is 0)."""
        self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        return self._server.server_port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def approval_path(settings: AnalysisSettings) -> Path:
    return Path(settings.state_dir) / APPROVAL_FILE


def approve(settings: AnalysisSettings, who: str = "") -> Path:
    """Records a person's go-ahead for promotion (the manual gate)."""
    path = approval_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"approved_at": time.time(), "by": who}) + "\n")
    tmp.replace(path)
    return path


class Controller:
    def __init__(self, settings: AnalysisSettings, actuator: Actuator,
                 reader: WindowReader | None = None, metrics: AnalysisMetrics | None = None):
        self.s = settings
        self.actuator = actuator
        self.reader = reader or WindowReader(
            PromClient(settings.prometheus_url, settings.prometheus_timeout_s),
            settings.window, settings.selector, settings.handler,
        )
        self.metrics = metrics
        self.failed = 0
        self.steps = 0
        self.finished = False
        self.last_weight: int | None = None
        self.history: list[Decision] = []

    # -- pure part: what to do, given the verdicts ---------------------------------
    def decide(self, checks: list[CheckResult], weight: int) -> tuple[str, int, str]:
        failed = [c.check for c in checks if c.verdict == FAIL]
        unsure = [c.check for c in checks if c.verdict == INCONCLUSIVE]
        s = self.s
        if failed:
            n = self.failed + 1
            if n >= s.failed_checks_threshold:
                return ROLLBACK, 0, f"failed: {', '.join(failed)} ({n} of {s.failed_checks_threshold})"
            return HOLD, weight, f"failed: {', '.join(failed)} ({n} of {s.failed_checks_threshold})"
        if unsure:
            return HOLD, weight, f"inconclusive: {', '.join(unsure)}"
        if weight >= s.max_weight:
            if s.manual_gate and not approval_path(s).exists():
                return WAIT, weight, "all checks passed at max weight; waiting for approval"
            return PROMOTE, 0, "all checks passed at max weight"
        new = min(weight + s.step_weight, s.max_weight)
        return ADVANCE, new, "all checks passed"

    # -- one analysis ---------------------------------------------------------------
    def step(self) -> Decision:
        try:
            weight = int(self.actuator.weight())
        except Exception as e:  # noqa: BLE001 - state unreadable: change nothing, try again
            w = self.last_weight or 0
            return self._record(Decision(PAUSE, w, w, f"cannot read the canary weight: "
                                         f"{type(e).__name__}: {e}"))
        if self.last_weight is not None and weight != self.last_weight:
            if weight == 0:
                return self._finish(Decision(STOPPED, weight, weight,
                                             "weight set to 0 outside the controller: stopping"))
            log.warning("weight changed outside the controller: %s -> %s", self.last_weight, weight)
        if weight == 0 and self.steps == 0:
            return self._act(Decision(ADVANCE, 0, min(self.s.step_weight, self.s.max_weight),
                                      "start: first step to the canary"))
        try:
            windows = self.reader.read()
        except (PrometheusUnavailable, PrometheusQueryError) as e:
            d = Decision(PAUSE, weight, weight, f"cannot read Prometheus: {e}",
                         failed_analyses=self.failed)
            return self._record(d)
        checks = judge(windows["canary"], windows["production"], self.s)
        action, new, reason = self.decide(checks, weight)
        if any(c.verdict == FAIL for c in checks):
            self.failed += 1
        return self._act(Decision(action, weight, new, reason, checks, self.failed))

    def _act(self, d: Decision) -> Decision:
        why = f"canary analysis: {d.reason}"
        try:
            if d.action == ADVANCE:
                self.actuator.set_weight(d.weight_after, reason=why)
                self.steps += 1
            elif d.action == PROMOTE:
                self.actuator.promote(reason=why)
                approval_path(self.s).unlink(missing_ok=True)
                self.finished = True
            elif d.action == ROLLBACK:
                self.actuator.rollback(reason=why)
                self.finished = True
        except Exception as e:  # noqa: BLE001 - any routing failure: keep state, retry next time
            log.error("%s failed: %s: %s", d.action, type(e).__name__, e)
            d = Decision(HOLD, d.weight_before, d.weight_before,
                         f"{d.action} failed ({type(e).__name__}: {e}); retrying next analysis",
                         d.checks)
            if self.failed >= self.s.failed_checks_threshold:
                self.failed = self.s.failed_checks_threshold - 1  # the rollback is decided again
        self.last_weight = d.weight_after
        return self._record(d)

    def _finish(self, d: Decision) -> Decision:
        self.finished = True
        return self._record(d)

    def _record(self, d: Decision) -> Decision:
        d.failed_analyses = self.failed
        self.history.append(d)
        level = logging.WARNING if d.action in (ROLLBACK, PAUSE) else logging.INFO
        log.log(level, "%s", d.line())
        if self.metrics:
            self.metrics.observe(d, self.steps)
        try:
            state = Path(self.s.state_dir)
            state.mkdir(parents=True, exist_ok=True)
            with open(state / DECISIONS_FILE, "a") as f:
                f.write(json.dumps(d.as_dict()) + "\n")
        except OSError as e:
            log.warning("cannot write the decision log in %s: %s", self.s.state_dir, e)
        return d

    def run(self, stop: threading.Event | None = None, max_steps: int | None = None) -> Decision | None:
        """Analyses every ``interval_s`` until promoted, rolled back or stopped."""
        stop = stop or threading.Event()
        approval_path(self.s).unlink(missing_ok=True)  # an approval is for this rollout only
        n = 0
        last = None
        while not stop.is_set() and not self.finished:
            started = time.monotonic()
            last = self.step()
            n += 1
            if self.finished or (max_steps is not None and n >= max_steps):
                break
            stop.wait(max(0.0, self.s.interval_s - (time.monotonic() - started)))
        return last
