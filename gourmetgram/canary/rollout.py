"""The canary controller: every interval it reads both variants' numbers from
Prometheus, judges them (``gourmetgram.canary.analysis``), decides advance, hold, promote or
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

from gourmetgram.canary import rollout_state
from gourmetgram.canary import routing as canary
from gourmetgram.canary.analysis import FAIL, INCONCLUSIVE, CheckResult
from gourmetgram.canary.analysis_settings import AnalysisSettings
from gourmetgram.canary.judge import judge, judge_shadow
from gourmetgram.canary.promclient import (
    PromClient,
    PrometheusQueryError,
    PrometheusUnavailable,
    WindowReader,
)
from gourmetgram.canary.rollout_metrics import AnalysisMetrics
from gourmetgram.canary.rollout_state import (
    ADVANCE,
    HOLD,
    IDLE,
    PAUSE,
    PROMOTE,
    ROLLBACK,
    ROLLING_BACK,
    RUNNING,
    SHADOW,
    STOPPED,
    WAIT,
)
from gourmetgram.canary.shadow import ShadowReader
from gourmetgram.host.layout import HostLayout, host_layout

log = logging.getLogger("gourmetgram.canary.rollout")

APPROVAL_FILE = "approved"
START_FILE = "start"
DECISIONS_FILE = "decisions.jsonl"
# How often the idle controller looks for a ship or a start request.
IDLE_POLL_S = 2.0


class Actuator(Protocol):
    """What the controller needs from the canary routing; nothing else."""

    def weight(self) -> int: ...
    def shadow(self) -> int: ...
    def set_shadow(self, percent: int, reason: str) -> None: ...
    def set_weight(self, weight: int, reason: str) -> None: ...
    def promote(self, reason: str) -> None: ...
    def rollback(self, reason: str) -> None: ...


class CanaryLibraryActuator:
    """The one seam to ``gourmetgram.canary.routing`` (the routing library): the same calls
    that ``gourmetgram canary set/promote/rollback`` make, on the given host layout
    and service manager (a test stack passes its own)."""

    def __init__(self, layout: HostLayout | None = None, services: canary.Services | None = None):
        self.layout = layout or host_layout()
        self.services = services or canary.SystemdServices(self.layout)

    def weight(self) -> int:
        return canary.load_state(self.layout).canary_weight

    def shadow(self) -> int:
        return canary.load_state(self.layout).canary_shadow_percent

    def set_shadow(self, percent: int, reason: str) -> None:
        canary.set_shadow(percent, reason, layout=self.layout, services=self.services)

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


def request_start(settings: AnalysisSettings, who: str = "") -> Path:
    """Asks the always-on controller to start a rollout (``gourmetgram canary start``)."""
    path = Path(settings.state_dir) / START_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"requested_at": time.time(), "by": who}) + "\n")
    tmp.replace(path)
    return path


class Controller:
    """One rollout at a time: ``step()`` is one analysis and its decision; ``run()`` steps
    until the rollout ends; ``serve()`` is the always-on loop, idle between rollouts.
    The rollout state lives in ``<state_dir>/rollout.json`` (gourmetgram.canary.rollout_state)."""

    def __init__(self, settings: AnalysisSettings, actuator: Actuator,
                 reader: WindowReader | None = None, metrics: AnalysisMetrics | None = None,
                 upstreams: dict[str, str] | None = None, shadow: ShadowReader | None = None):
        self.s = settings
        self.actuator = actuator
        self.reader = reader or WindowReader(
            PromClient(settings.prometheus_url, settings.prometheus_timeout_s),
            settings.window, settings.selector, settings.handler, upstreams,
        )
        self.metrics = metrics
        self.shadow = shadow or ShadowReader(host_layout())
        self.state = rollout_state.load(settings.state_dir)
        self.finished = False
        self.last_weight: int | None = None
        self.history: list[Decision] = []

    @property
    def failed(self) -> int:
        return self.state.failed

    @property
    def steps(self) -> int:
        return self.state.steps

    def _save(self) -> None:
        try:
            rollout_state.save(self.s.state_dir, self.state)
        except OSError as e:
            log.warning("cannot write the rollout state in %s: %s", self.s.state_dir, e)

    def begin(self, cause: str, weight: int) -> None:
        """A new rollout from ``weight``; an approval left from an earlier one is void."""
        self.state.begin(cause, weight, time.time())
        self.state.shadow_done = self.s.shadow_intervals == 0
        approval_path(self.s).unlink(missing_ok=True)
        self.finished = False
        self.last_weight = weight
        log.info("rollout started (%s) at weight %d%%", cause, weight)
        self._save()
        if self.metrics:
            self.metrics.set_phase(self.state.phase)

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
        st = self.state
        if st.phase == IDLE:
            self.begin("controller started", weight)
        known = self.last_weight if self.last_weight is not None else (
            int(st.weights[-1][1]) if st.weights else weight)
        if weight != known:
            if weight == 0:
                return self._finish(Decision(STOPPED, weight, weight,
                                             "weight set to 0 outside the controller: stopping"))
            log.warning("weight changed outside the controller: %s -> %s", known, weight)
            st.weight_changed(weight, time.time())
        if st.phase == ROLLING_BACK:
            # Decided once, retried until done: a canary judged bad is never advanced.
            return self._act(Decision(ROLLBACK, weight, 0, st.rollback_reason or "rollback"))
        if weight == 0 and st.steps == 0 and not st.shadow_done:
            return self._shadow_step()
        if weight == 0 and st.steps == 0:
            return self._act(Decision(ADVANCE, 0, self._first_step(),
                                      "start: first step to the canary"))
        now = time.time()
        try:
            windows = self.reader.read(now)
        except (PrometheusUnavailable, PrometheusQueryError) as e:
            return self._record(Decision(PAUSE, weight, weight, f"cannot read Prometheus: {e}"))
        st.analyses += 1
        checks = judge(windows["canary"], windows["production"], self.s, st.analyses,
                       st.expected_share(now, self.s.window))
        action, new, reason = self.decide(checks, weight)
        if any(c.verdict == FAIL for c in checks):
            st.failed += 1
        held = now - st.weight_since()
        if action == HOLD and held > self.s.progress_deadline_s:
            action, new, reason = ROLLBACK, 0, (
                f"held at {weight}% for {held:.0f} s, past the progress deadline of "
                f"{self.s.progress_deadline_s:g} s (last: {reason})")
        return self._act(Decision(action, weight, new, reason, checks))

    def _first_step(self) -> int:
        return min(self.s.step_weight, self.s.max_weight)

    def _shadow_step(self) -> Decision:
        """The shadow stage: mirror on, then each analysis judges the mirrored requests;
        ``shadow_intervals`` passing ones end it with the first weight step (which turns
        the mirror off in the same routing change)."""
        st, s = self.state, self.s
        if not st.shadow_since:
            return self._act(Decision(SHADOW, 0, 0, f"shadow stage: mirroring {s.shadow_percent}% "
                                      "of production's predictions to the canary"))
        try:
            mirrored = int(self.actuator.shadow())
        except Exception as e:  # noqa: BLE001 - state unreadable: change nothing, try again
            return self._record(Decision(PAUSE, 0, 0, f"cannot read the shadow percent: "
                                         f"{type(e).__name__}: {e}"))
        if mirrored == 0:
            return self._finish(Decision(STOPPED, 0, 0, "mirror turned off outside the "
                                         "controller in the shadow stage: stopping"))
        now = time.time()
        try:
            windows = self.reader.read(now)
        except (PrometheusUnavailable, PrometheusQueryError) as e:
            return self._record(Decision(PAUSE, 0, 0, f"cannot read Prometheus: {e}"))
        try:
            pairs = self.shadow.read(now, s.window, since=st.shadow_since)
        except OSError as e:
            log.warning("cannot read the shadow logs: %s", e)
            pairs = None
        st.analyses += 1
        checks = judge_shadow(windows["canary"], windows["production"], s, st.analyses, pairs)
        if self.metrics:
            self.metrics.observe_shadow(pairs)
        action, new, reason = self.decide(checks, 0)
        if any(c.verdict == FAIL for c in checks):
            st.failed += 1
        if action == ADVANCE:
            st.shadow_passed += 1
            if st.shadow_passed < s.shadow_intervals:
                action, new, reason = SHADOW, 0, (f"shadow stage: all checks passed "
                                                  f"({st.shadow_passed} of {s.shadow_intervals})")
            else:
                new = self._first_step()
                reason = (f"shadow stage passed ({st.shadow_passed} analyses): mirror off, "
                          "first step to the canary")
        held = now - st.weight_since()
        if action == HOLD and held > s.progress_deadline_s:
            action, new, reason = ROLLBACK, 0, (
                f"held in the shadow stage for {held:.0f} s, past the progress deadline of "
                f"{s.progress_deadline_s:g} s (last: {reason})")
        return self._act(Decision(action, 0, new, reason, checks))

    def _act(self, d: Decision) -> Decision:
        why = f"canary analysis: {d.reason}"
        st = self.state
        if d.action == ROLLBACK:
            st.phase, st.rollback_reason = ROLLING_BACK, d.reason
            self._save()  # decided: a restart retries the rollback, never advances
        try:
            if d.action == SHADOW and not st.shadow_since:
                self.actuator.set_shadow(self.s.shadow_percent, reason=why)
                st.shadow_since = time.time()
                st.weight_changed(0, st.shadow_since)
            elif d.action == ADVANCE:
                self.actuator.set_weight(d.weight_after, reason=why)
                st.steps += 1
                st.shadow_done = True
                st.weight_changed(d.weight_after, time.time())
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
        self.last_weight = d.weight_after
        return self._record(d)

    def _finish(self, d: Decision) -> Decision:
        self.finished = True
        return self._record(d)

    def _record(self, d: Decision) -> Decision:
        d.failed_analyses = self.state.failed
        steps = self.state.steps
        if self.finished and self.state.phase != IDLE:
            self.state.end()
        self._save()
        self.history.append(d)
        level = logging.WARNING if d.action in (ROLLBACK, PAUSE) else logging.INFO
        log.log(level, "%s", d.line())
        if self.metrics:
            self.metrics.observe(d, steps)
            self.metrics.set_phase(self.state.phase)
            st = self.state
            self.metrics.set_shadow_stage(bool(st.phase == RUNNING and st.shadow_since
                                               and not st.shadow_done))
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
        n = 0
        last = None
        self.finished = False
        while not stop.is_set() and not self.finished:
            started = time.monotonic()
            last = self.step()
            n += 1
            if self.finished or (max_steps is not None and n >= max_steps):
                break
            stop.wait(max(0.0, self.s.interval_s - (time.monotonic() - started)))
        return last

    # -- always on ----------------------------------------------------------------------
    def pending_start(self, history_file: Path) -> str | None:
        """Why a rollout should start now: a ``canary start`` request, or (with
        ``auto_start``) a ``ship`` in the routing history newer than any seen."""
        request = Path(self.s.state_dir) / START_FILE
        if request.exists():
            request.unlink(missing_ok=True)
            return "gourmetgram canary start"
        entries = []
        if history_file.exists():
            entries = [json.loads(x) for x in history_file.read_text().splitlines() if x.strip()]
        seen = self.state.history_seen
        ships = [e for e in entries if e.get("action") == "ship" and e.get("time", 0) > seen]
        if entries:
            self.state.history_seen = max(seen, max(e.get("time", 0) for e in entries))
            self._save()
        if ships and self.s.auto_start:
            return f"ship {ships[-1].get('versions', {}).get('canary', '?')}"
        return None

    def serve(self, stop: threading.Event, history_file: Path, poll_s: float = IDLE_POLL_S) -> None:
        """The unit's loop: idle (metrics served, phase ``idle``) until a rollout is
        asked for, then one rollout, then idle again; a rollout in progress when the
        controller (re)starts is resumed."""
        if not rollout_state.state_path(self.s.state_dir).exists():
            # First start on this host: ships from before it are not rolled out by surprise.
            self.state.history_seen = time.time()
            self._save()
        while not stop.is_set():
            if self.state.phase == IDLE:
                cause = self.pending_start(history_file)
                if cause is None:
                    stop.wait(poll_s)
                    continue
                try:
                    weight = int(self.actuator.weight())
                except Exception as e:  # noqa: BLE001 - retried at the next poll
                    log.error("cannot start a rollout (%s): %s", cause, e)
                    stop.wait(poll_s)
                    continue
                self.begin(cause, weight)
            self.run(stop)
            if not self.finished:
                continue
            stop.wait(min(poll_s, self.s.interval_s))
