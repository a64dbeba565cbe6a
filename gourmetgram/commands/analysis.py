"""``gourmetgram canary analyze|run|approve``: the automated canary analysis.

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
from pathlib import Path

from gourmetgram.errors import UsageError
from gourmetgram.hostlayout import host_layout

EXIT_PASS, EXIT_FAIL, EXIT_INCONCLUSIVE, EXIT_UNREACHABLE = 0, 1, 3, 4


def _settings(args: argparse.Namespace):
    from gourmetgram.analysis_settings import load_settings

    return load_settings(
        Path(args.settings) if args.settings else None, layout=host_layout(),
        prometheus_url=getattr(args, "prometheus_url", None),
        interval_s=getattr(args, "interval", None),
        window_s=getattr(args, "window", None),
    )


def cmd_analyze(args: argparse.Namespace) -> int:
    from gourmetgram.analysis import FAIL, INCONCLUSIVE, judge
    from gourmetgram.promclient import (
        PromClient,
        PrometheusQueryError,
        PrometheusUnavailable,
        WindowReader,
    )

    s = _settings(args)
    reader = WindowReader(PromClient(s.prometheus_url, s.prometheus_timeout_s), s.window,
                          s.selector, s.handler)
    try:
        windows = reader.read()
    except PrometheusUnavailable as e:
        print(f"Prometheus unreachable: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except PrometheusQueryError as e:
        raise UsageError(f"Prometheus refused a query (check the selector setting): {e}") from None
    checks = judge(windows["canary"], windows["production"], s)
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
    from gourmetgram.rollout import AnalysisMetrics, CanaryLibraryActuator, Controller

    s = _settings(args)  # every setting is checked before anything changes
    try:
        actuator = CanaryLibraryActuator()
        actuator.weight()  # fail fast (exit 2) on a host without a deployed stack
    except Exception as e:  # noqa: BLE001 - the library's own error, shown as one line
        raise UsageError(f"cannot read the canary state: {e}") from None
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    metrics = AnalysisMetrics()
    if s.metrics_port:
        try:
            port = metrics.serve(s.metrics_host, s.metrics_port)
        except OSError as e:
            raise UsageError(f"cannot listen on {s.metrics_host}:{s.metrics_port}: {e}") from None
        logging.getLogger("gourmetgram.rollout").info(
            "canary_analysis_* metrics on http://%s:%d/metrics", s.metrics_host, port)
    logging.getLogger("gourmetgram.rollout").info(
        "canary controller: every %g s over %g s windows, steps of %d up to %d, rollback after %d "
        "failed analyses, checks %s, alpha %g%s", s.interval_s, s.window, s.step_weight,
        s.max_weight, s.failed_checks_threshold, ",".join(s.checks), s.alpha,
        ", promotion waits for approval" if s.manual_gate else "")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        last = Controller(s, actuator, metrics=metrics).run(stop)
    finally:
        metrics.close()
    print(f"canary controller finished: {last.action if last else 'stopped'}")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    from gourmetgram.rollout import approve

    s = _settings(args)
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = ""
    try:
        path = approve(s, who)
    except OSError as e:
        raise UsageError(f"cannot record the approval in {s.state_dir}: {e}") from None
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
    r.set_defaults(func=cmd_run)

    g = canary_sub.add_parser("approve", help="let the controller promote (manual gate)")
    _settings_arg(g)
    g.set_defaults(func=cmd_approve)
