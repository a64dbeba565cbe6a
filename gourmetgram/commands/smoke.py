"""``gourmetgram smoke`` (checks a running stack) and ``wait-ready`` (the units' readiness wait)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from gourmetgram.errors import UsageError


def _api(text: str) -> tuple[str, str]:
    from gourmetgram.host.stack import VARIANTS

    name, sep, url = text.partition("=")
    if not sep or name not in VARIANTS or not url.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected VARIANT=URL with VARIANT one of {', '.join(VARIANTS)}, "
            "e.g. canary=http://127.0.0.1:8001"
        )
    return name, url


def cmd_smoke(args: argparse.Namespace) -> int:
    from gourmetgram.canary.routing import CanaryError
    from gourmetgram.host.layout import host_layout
    from gourmetgram.smoke import smoke, targets_from_stack

    if not args.url.startswith(("http://", "https://")):
        raise UsageError(f"--url {args.url!r} is not an http(s) URL")
    apis = dict(args.api or [])
    status_url = args.status_url
    weight = None
    stack_json = Path(args.stack) if args.stack else host_layout().stack_json
    if args.stack and not stack_json.exists():
        raise UsageError(f"--stack {stack_json} does not exist")
    if stack_json.exists():
        try:
            found, default_status, weight = targets_from_stack(stack_json)
        except CanaryError as e:
            raise UsageError(str(e)) from None
        apis = apis or found
        status_url = status_url or default_status
    elif not apis:
        print(f"skipped: the model APIs' /readyz and /metrics and Nginx's stub_status (internal: no "
              f"{stack_json} here; run on the host or pass --api VARIANT=URL)")
    image = None
    if args.image:
        try:
            image = Path(args.image).read_bytes()
        except OSError as e:
            raise UsageError(f"--image: {e}") from None
    checks = smoke(args.url, apis, status_url, image, weight)
    for c in checks:
        print(c.line(), file=sys.stdout if c.ok else sys.stderr)
    failed = [c for c in checks if not c.ok]
    print(f"smoke: {len(checks) - len(failed)}/{len(checks)} checks passed")
    return 1 if failed else 0


def cmd_wait_ready(args: argparse.Namespace) -> int:
    import requests

    deadline = time.monotonic() + args.timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            r = requests.get(args.url, timeout=2)
            if r.status_code == 200:
                return 0
            last = f"HTTP {r.status_code}"
        except requests.RequestException as e:
            last = type(e).__name__
        time.sleep(0.25)
    print(f"wait-ready: {args.url} not ready after {args.timeout:g}s ({last})", file=sys.stderr)
    return 1


def register(sub) -> None:
    s = sub.add_parser("smoke", help="check a running stack through Nginx",
                       description="One line per check; exit 1 if any fails. See docs/canary.md.")
    s.add_argument("--url", required=True, help="the stack's public URL, e.g. http://127.0.0.1")
    s.add_argument("--api", action="append", type=_api, metavar="VARIANT=URL",
                   help="a model API to check directly (repeat; default: both, from the host's stack.json; "
                   "without either only the public checks run)")
    s.add_argument("--status-url", help="Nginx stub_status URL (default: from stack.json)")
    s.add_argument("--stack", help="stack.json to read the default targets from")
    s.add_argument("--image", help="photo to classify (default: a generated JPEG)")
    s.set_defaults(func=cmd_smoke)

    w = sub.add_parser("wait-ready", help="wait until a URL answers 200 (units' ExecStartPost)")
    w.add_argument("--url", required=True)
    w.add_argument("--timeout", type=float, default=120.0, help="seconds (default 120)")
    w.set_defaults(func=cmd_wait_ready)
