"""``gourmetgram canary status|set|promote|rollback|ship``: thin layer over gourmetgram.canary.routing
(plus the analysis commands of ``gourmetgram.commands.analysis``)."""

from __future__ import annotations

import argparse
import json

from gourmetgram.commands.analysis import add_analysis_commands, controller_lines
from gourmetgram.errors import UsageError


def _weight(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of percent") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{value} is outside 0..100")
    return value


def _call(fn, *args, **kw):
    from gourmetgram.canary import routing as canary
    from gourmetgram.canary.routing import CanaryError

    canary.setup_logging()
    try:
        return fn(*args, **kw)
    except CanaryError as e:
        raise UsageError(str(e)) from None


def cmd_status(args: argparse.Namespace) -> int:
    from gourmetgram.canary import routing as canary

    st = _call(canary.status)
    if args.variant:
        _call(canary.check_variant, args.variant)
        st["variants"] = {args.variant: st["variants"][args.variant]}
    if args.json:
        print(json.dumps(st, indent=2))
    else:
        mode = "sticky (per client id)" if st["sticky"] else "per request"
        print(f"canary weight: {st['canary_weight']}% of /api/ traffic, split {mode}")
        if st["shadow_percent"]:
            print(f"shadow stage: {st['shadow_percent']}% of production's predictions mirrored "
                  "to the canary (answers discarded)")
        for name, v in st["variants"].items():
            health = "ready" if v["ready"] else f"NOT READY ({v['error'] or 'not ready'})"
            served = v["served_version"] or "-"
            print(f"  {name:<10} {v['weight']:>3}%  version {v['model_version'] or '(demo)'}"
                  f"  serving {served}  {health}  {v['url']}")
        if st["last_change"]:
            last = st["last_change"]
            print(f"last change: {last['action']} ({last.get('reason') or '-'})")
        print("where each value came from:")
        for key, source in st["sources"].items():
            print(f"  {key:<18} {source}")
        for line in controller_lines():
            print(line)
    bad = [n for n, v in st["variants"].items() if not v["ready"]]
    return 1 if bad else 0


def cmd_set(args: argparse.Namespace) -> int:
    from gourmetgram.canary import routing as canary

    st = _call(canary.set_weight, args.weight, reason=args.reason)
    print(f"canary weight now {st.canary_weight}%")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from gourmetgram.canary import routing as canary

    _call(canary.rollback, reason=args.reason or "rollback")
    print("canary weight now 0%: all /api/ traffic on production")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from gourmetgram.canary import routing as canary

    st = _call(canary.promote, reason=args.reason)
    print(f"production now serves {st.models['production'].version}; canary weight 0%")
    return 0


def cmd_ship(args: argparse.Namespace) -> int:
    from gourmetgram.canary import routing as canary

    st = _call(canary.ship, args.model, args.version, reason=args.reason)
    print(f"canary now serves {st.models['canary'].version} with weight 0%; "
          "next: gourmetgram canary set --weight 10")
    return 0


def register(sub) -> None:
    c = sub.add_parser("canary", help="move /api/ traffic between production and canary",
                       description="See docs/canary.md. Run on the host, as root.")
    cs = c.add_subparsers(dest="canary_command", required=True, metavar="ACTION")

    s = cs.add_parser("status", help="weights, model versions and health of both variants")
    s.add_argument("--variant", help="only this variant (production or canary)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_status)

    w = cs.add_parser("set", help="send N percent of /api/ traffic to the canary")
    w.add_argument("--weight", type=_weight, required=True, help="0..100 percent to the canary")
    w.add_argument("--reason", default="", help="recorded in the journal and history")
    w.set_defaults(func=cmd_set)

    r = cs.add_parser("rollback", help="canary weight 0 at once")
    r.add_argument("--reason", default="", help="recorded in the journal and history")
    r.set_defaults(func=cmd_rollback)

    p = cs.add_parser("promote", help="make the canary's model the production model")
    p.add_argument("--reason", default="", help="recorded in the journal and history")
    p.set_defaults(func=cmd_promote)

    h = cs.add_parser("ship", help="install a model as the canary (weight stays 0)")
    h.add_argument("--model", required=True, help="model file (.pt)")
    h.add_argument("--version", required=True, help="version label, e.g. 2026-11-26.1")
    h.add_argument("--reason", default="", help="recorded in the journal and history")
    h.set_defaults(func=cmd_ship)

    add_analysis_commands(cs)
