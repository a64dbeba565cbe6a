"""The controller's own metrics (``canary_analysis_*``), served on the bind address
whether or not a rollout runs, so its Prometheus target is up from the first deploy."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from gourmetgram.canary.analysis import FAIL, INCONCLUSIVE, PASS, SKIPPED
from gourmetgram.canary.rollout_state import ACTIONS, IDLE, PAUSE, PHASES

VERDICTS = (PASS, FAIL, INCONCLUSIVE, SKIPPED)


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
        self.phase = Gauge("canary_analysis_phase",
                           "1 for the controller's phase (idle between rollouts), 0 for the others.",
                           ("phase",), registry=r)
        # The shadow stage (gourmetgram.canary.shadow), from its last analysis.
        self.shadow_stage = Gauge("canary_shadow_stage",
                                  "1 while the rollout is in its shadow stage (mirror on).",
                                  registry=r)
        self.shadow_agreement = Gauge("canary_shadow_agreement",
                                      "Share of mirrored requests where the canary named "
                                      "production's class (last shadow analysis).", registry=r)
        self.shadow_mirrored = Gauge("canary_shadow_mirrored_requests",
                                     "Marked requests production answered in the last shadow "
                                     "window.", registry=r)
        self.shadow_answered = Gauge("canary_shadow_answered_requests",
                                     "Of those, answered by the canary too (the pairs judged).",
                                     registry=r)
        self.shadow_pairs = Gauge("canary_shadow_class_pairs",
                                  "Pairs judged in the last shadow window, by production's class.",
                                  ("class_name",), registry=r)
        self.shadow_disagreements = Gauge("canary_shadow_class_disagreements",
                                          "Pairs where the canary named another class, by "
                                          "production's class (last shadow window).",
                                          ("class_name",), registry=r)
        self.shadow_stage.set(0)
        self.set_phase(IDLE)
        for a in ACTIONS:
            self.last_decision.labels(a).set(0)
            self.decisions.labels(a)
        self._server = None

    def observe(self, d, step: int) -> None:
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

    def set_shadow_stage(self, on: bool) -> None:
        self.shadow_stage.set(1 if on else 0)

    def observe_shadow(self, w) -> None:
        """The last shadow window's numbers (a ShadowWindow, or None when unreadable)."""
        self.shadow_pairs.clear()
        self.shadow_disagreements.clear()
        if w is None:
            self.shadow_agreement.set(float("nan"))
            return
        self.shadow_agreement.set(w.agreement)
        self.shadow_mirrored.set(w.mirrored)
        self.shadow_answered.set(w.answered)
        for name, n in w.pairs_by_class.items():
            self.shadow_pairs.labels(name).set(n)
            self.shadow_disagreements.labels(name).set(w.disagreed_by_class.get(name, 0))

    def set_phase(self, phase: str) -> None:
        for p in PHASES:
            self.phase.labels(p).set(1 if p == phase else 0)

    def serve(self, host: str, port: int) -> int:
        """Starts the HTTP endpoint; returns the port (useful when ``port`` is 0)."""
        self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        return self._server.server_port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
