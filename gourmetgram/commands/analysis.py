"""``gourmetgram canary analyze|run|start|approve``: the automated canary analysis.

Part of the ``canary`` command group (``gourmetgram.commands.canary`` adds them).
Every command reads the host's deployed settings file
(``/etc/gourmetgram/canary-analysis.env``) unless ``--settings`` names another; flags
override single settings.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from gourmetgram.errors import UsageError
from gourmetgram.host.layout import host_layout

EXIT_PASS, EXIT_FAIL, EXIT_INCONCLUSIVE, EXIT_UNREACHABLE = 0, 1, 3, 4


def _settings(args: argparse.Namespace):
    """The deployed settings (or ``--settings``), flags over them, and the window
    checked against the deployed scrape interval."""
    from gourmetgram.canary.analysis_settings import load_settings, with_deployed_scrape_interval

    layout = host_layout()
    env_file = Path(args.settings) if getattr(args, "settings", None) else None
    flags = {"prometheus_url": getattr(args, "prometheus_url", None),
             "interval_s": getattr(args, "interval", None),
             "window_s": getattr(args, "window", None)}
    s = load_settings(env_file, layout, **flags)
    return with_deployed_scrape_interval(s, layout, env_file, **flags)


def _deployed_stack():
    """The host's stack data, or None where there is none (analyze from elsewhere)."""
    from gourmetgram.canary import routing as canary

    try:
        return canary.load_state(host_layout())
    except canary.CanaryError:
        return None


def upstreams_of(stack) -> dict[str, str]:
    """Each variant's API as Nginx logs it in $upstream_addr (mtail's label)."""
    return {v: f"{stack.bind_address}:{port}" for v, port in stack.api_ports.items()}


def _steady_share(stack, window: float) -> float | None:
    """The canary weight as a share, if no change happened within the window (else the
    sample-ratio check has no single weight to compare with and is skipped)."""
    history = host_layout().history_file
    if stack is None:
        return None
    if history.exists():
        lines = history.read_text().splitlines()
        if lines and json.loads(lines[-1]).get("time", 0) > time.time() - window:
            return None
    return stack.canary_weight / 100.0


def cmd_analyze(args: argparse.Namespace) -> int:
    from gourmetgram.canary.analysis import FAIL, INCONCLUSIVE
    from gourmetgram.canary.judge import judge
    from gourmetgram.canary.promclient import (
        PromClient,
        PrometheusQueryError,
        PrometheusUnavailable,
        WindowReader,
    )

    s = _settings(args)
    stack = _deployed_stack()
    reader = WindowReader(PromClient(s.prometheus_url, s.prometheus_timeout_s), s.window,
                          s.selector, s.handler, upstreams_of(stack) if stack else None)
    try:
        windows = reader.read()
    except PrometheusUnavailable as e:
        print(f"Prometheus unreachable: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except PrometheusQueryError as e:
        raise UsageError(f"Prometheus refused a query (check the selector setting): {e}") from None
    checks = judge(windows["canary"], windows["production"], s, 1, _steady_share(stack, s.window))
    verdicts = {c.verdict for c in checks}
    overall = "fail" if FAIL in verdicts else "inconclusive" if INCONCLUSIVE in verdicts else "pass"
    if args.json:
        print(json.dumps({"overall": overall, "window_s": s.window,
                          "checks": [c.as_dict() for c in checks]}, indent=2))
    else:
        print(f"canary analysis over the last {s.window:g} s: {overall}")
        for c in checks:
            print(f"  {c.line()}")
    return {"pass": EXIT_PASS, "fail": EXIT_FAIL}.get(overall, EXIT_INCONCLUSIVE)


def cmd_run(args: argparse.Namespace) -> int:
    from gourmetgram.canary.rollout import AnalysisMetrics, CanaryLibraryActuator, Controller
    from gourmetgram.canary.rollout_state import RolloutStateError

    s = _settings(args)  # every setting is checked before anything changes
    stack = _deployed_stack()
    if stack is None:
        raise UsageError(f"cannot read the canary state: {host_layout().stack_json} does not "
                         "exist: deploy the stack first")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    log = logging.getLogger("gourmetgram.canary.rollout")
    metrics = AnalysisMetrics()
    try:
        controller = Controller(s, CanaryLibraryActuator(), metrics=metrics,
                                upstreams=upstreams_of(stack))
    except RolloutStateError as e:
        raise UsageError(f"{e}; move it away to start afresh") from None
    if s.metrics_port:
        try:
            port = metrics.serve(s.metrics_host, s.metrics_port)
        except OSError as e:
            raise UsageError(f"cannot listen on {s.metrics_host}:{s.metrics_port}: {e}") from None
        log.info("canary_analysis_* metrics on http://%s:%d/metrics", s.metrics_host, port)
    log.info(
        "canary controller: every %g s over %g s windows (scrape interval %g s), steps of %d up "
        "to %d, rollback after %d failed analyses or %g s at one weight, checks %s, alpha %g "
        "over the whole rollout%s", s.interval_s, s.window, s.scrape_interval_s, s.step_weight,
        s.max_weight, s.failed_checks_threshold, s.progress_deadline_s, ",".join(s.checks),
        s.alpha, ", promotion waits for approval" if s.manual_gate else "")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        if args.once:
            last = controller.run(stop)
            print(f"canary controller finished: {last.action if last else 'stopped'}")
        else:
            log.info("idle until a canary is shipped or `gourmetgram canary start`%s",
                     "" if s.auto_start else " (auto_start off: only on start)")
            controller.serve(stop, host_layout().history_file)
    finally:
        metrics.close()
    return 0


def _request(args: argparse.Namespace, record, what: str):
    """Records a person's request for the controller (a file in its state folder)."""
    s = _settings(args)
    try:
        return record(s, _user())
    except OSError as e:
        raise UsageError(f"cannot record the {what} in {s.state_dir}: {e}") from None


def cmd_start(args: argparse.Namespace) -> int:
    from gourmetgram.canary.rollout import request_start

    path = _request(args, request_start, "start request")
    print(f"rollout requested ({path}): gourmetgram-canary-controller starts it within a few "
          "seconds; follow it with `journalctl -fu gourmetgram-canary-controller`")
    return 0


def controller_lines() -> list[str]:
    """What `gourmetgram canary status` shows of the controller (deployed settings)."""
    from gourmetgram.canary import rollout_state

    try:
        s = _settings(argparse.Namespace())
        st = rollout_state.load(s.state_dir)
    except (UsageError, rollout_state.RolloutStateError) as e:
        return [f"controller: cannot read its state: {e}"]
    if st.phase == rollout_state.IDLE:
        return ["controller: idle (starts a rollout when a canary is shipped, "
                "or on `gourmetgram canary start`)"]
    stage = ""
    if st.shadow_since and not st.shadow_done:
        stage = f", shadow stage ({st.shadow_passed} of {s.shadow_intervals} analyses passed)"
    return [f"controller: {st.phase} ({st.cause}){stage}, {st.steps} steps, {st.failed} of "
            f"{s.failed_checks_threshold} failed analyses, {st.analyses} analyses, at this "
            f"weight for {time.time() - st.weight_since():.0f} s of {s.progress_deadline_s:g} s"
            + (f"; rollback: {st.rollback_reason}" if st.rollback_reason else "")]


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def cmd_approve(args: argparse.Namespace) -> int:
    from gourmetgram.canary.rollout import approve

    path = _request(args, approve, "approval")
    print(f"approved: the controller promotes at its next passing analysis at max weight ({path})")
    return 0


def _settings_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--settings", metavar="FILE",
                   help="env file of CANARY_ANALYSIS_* settings (default: the deployed "
                   "/etc/gourmetgram/canary-analysis.env; see docs/analysis.md)")


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return v


def add_analysis_commands(canary_sub) -> None:
    """Adds analyze, run and approve to the ``canary`` group's subparsers."""
    a = canary_sub.add_parser("analyze", help="judge the canary once and print it; changes nothing")
    _settings_arg(a)
    a.add_argument("--prometheus-url", help="CANARY_ANALYSIS_PROMETHEUS_URL")
    a.add_argument("--window", type=_positive, metavar="SECONDS",
                   help="seconds of data to judge (CANARY_ANALYSIS_WINDOW_S)")
    a.add_argument("--json", action="store_true", help="print the judgement as JSON")
    a.set_defaults(func=cmd_analyze)

    r = canary_sub.add_parser("run", help="the controller: step the canary up, promote or roll back")
    _settings_arg(r)
    r.add_argument("--prometheus-url", help="CANARY_ANALYSIS_PROMETHEUS_URL")
    r.add_argument("--interval", type=_positive, metavar="SECONDS",
                   help="seconds between analyses (CANARY_ANALYSIS_INTERVAL_S, default 60)")
    r.add_argument("--once", action="store_true",
                   help="run one rollout now and exit (the unit runs without it: always on)")
    r.set_defaults(func=cmd_run)

    t = canary_sub.add_parser("start", help="ask the controller to start a rollout now")
    _settings_arg(t)
    t.set_defaults(func=cmd_start)

    g = canary_sub.add_parser("approve", help="let the controller promote (manual gate)")
    _settings_arg(g)
    g.set_defaults(func=cmd_approve)
