"""``gourmetgram load``: the lab's traffic patterns from a terminal (see docs/load.md)."""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from pathlib import Path

from gourmetgram.errors import UsageError

SCENARIOS = ("ramp", "steady", "errors", "images")
EXIT_INTERRUPTED = 130


def _number(args: argparse.Namespace, name: str, kind=float, minimum: float = 0.0,
            strict: bool = True):
    """Options are parsed here, not by argparse, so a bad value is one line and exit 2."""
    raw = getattr(args, name)
    if raw is None:
        return None
    flag = "--" + name.replace("_", "-")
    try:
        value = kind(raw)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise UsageError(f"{flag} must be {what}, not {raw!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"{flag} must be a finite number, not {raw!r}")
    if value < minimum or (strict and value == minimum):
        bound = f"over {minimum:g}" if strict else f"at least {minimum:g}"
        raise UsageError(f"{flag} must be {bound}, not {raw!r}")
    return value


def build_spec(args: argparse.Namespace):
    """Validates every argument (no traffic yet) and returns a LoadSpec."""
    from gourmetgram import load

    step = _number(args, "step")
    clients = _number(args, "clients", int)
    duration = _number(args, "duration")
    rate = _number(args, "rate")
    requests_cap = _number(args, "requests", int)
    timeout = _number(args, "timeout")
    max_duration = _number(args, "max_duration")
    max_in_flight = _number(args, "max_in_flight", int)
    seed = _number(args, "seed", int, strict=False)
    client_ids = _number(args, "client_ids", int)
    if clients is not None and clients > 1000:
        raise UsageError(f"--clients {clients} is more than 1000 threads; use --rate for more load")
    if max_in_flight is not None and max_in_flight > 1000:
        raise UsageError(f"--max-in-flight {max_in_flight} is more than 1000 threads")

    sc = args.scenario
    if sc == "images":
        if not args.folder:
            raise UsageError("images needs a folder: gourmetgram load images DIR --url URL")
    elif args.folder:
        raise UsageError(f"{sc} takes no folder (got {args.folder!r}); only 'images' does")
    if sc in ("ramp", "errors") and (clients is not None or duration is not None):
        raise UsageError(f"{sc} sets its own clients and length; use --step to change the length")
    if sc in ("steady", "images") and step is not None:
        raise UsageError(f"--step applies to ramp and errors, not {sc}")
    if args.loop and sc != "images":
        raise UsageError("--loop applies to the images scenario only")
    if args.image and sc in ("errors", "images"):
        raise UsageError(f"--image does not apply to {sc}")
    if rate is not None and clients is not None:
        raise UsageError("--rate and --clients exclude each other (open loop vs closed loop)")

    if sc == "images":
        folder = Path(args.folder)
        if not folder.is_dir():
            raise UsageError(f"folder {folder} does not exist" if not folder.exists()
                             else f"{folder} is not a folder")
        try:
            payloads = load.Payloads.folder(folder, loop=args.loop, seed=seed)
        except ValueError as e:
            raise UsageError(str(e)) from None
    elif sc == "errors":
        payloads = load.Payloads.errors(seed)
    else:
        if args.image:
            image = Path(args.image)
            if not image.is_file():
                raise UsageError(f"--image {image} is not a file")
            payloads = load.Payloads.image(image.read_bytes(), image.name)
        else:
            payloads = load.Payloads.image(load.default_photo(), "generated.jpg")

    if sc == "ramp":
        phases = load.stepped(load.RAMP_CLIENTS, step or 30.0, rate)
    elif sc == "errors":
        phases = load.stepped(load.ERROR_RAMP_CLIENTS, step or 30.0, rate)
    elif sc == "steady":
        if duration is None and requests_cap is None:
            duration = 60.0
        phases = [load.Phase(duration, clients or 1, rate)]
    else:
        phases = [load.Phase(duration, clients or 1, rate)]
    if args.report:
        report = Path(args.report)
        if report.exists() and not report.is_dir():
            raise UsageError(f"--report {report} exists and is not a folder")
        if not report.exists() and not report.parent.is_dir():
            raise UsageError(f"--report: folder {report.parent} does not exist")
    return load.LoadSpec(
        url=args.url,
        phases=phases,
        payloads=payloads,
        scenario=sc if sc != "images" else f"images {args.folder}",
        timeout=timeout or 5.0,
        max_duration=max_duration or 1800.0,
        max_requests=requests_cap,
        max_in_flight=max_in_flight or 64,
        client_ids=client_ids,
        seed=seed,
    )


class Progress:
    """A redrawn bar on a terminal; a plain line every few seconds otherwise."""

    def __init__(self, spec, stream=sys.stderr, every: float = 5.0):
        self.spec = spec
        self.stream = stream
        self.tty = stream.isatty()
        self.every = every
        self.last_line = 0.0
        self.planned = spec.planned_seconds
        self.total = spec.payloads.total
        if spec.max_requests is not None:
            self.total = min(self.total or spec.max_requests, spec.max_requests)

    def fraction(self, snap: dict) -> float | None:
        parts = []
        if self.planned:
            parts.append(snap["elapsed"] / self.planned)
        if self.total:
            parts.append(snap["requests"] / self.total)
        return min(1.0, max(parts)) if parts else None

    def line(self, snap: dict) -> str:
        mode = f"{snap['clients']} clients" if not self.spec.open_loop else f"{snap['clients']} req/s due"
        return (
            f"{snap['elapsed']:6.1f}s  {snap['requests']:6d} req  {snap['rate']:6.1f} req/s  "
            f"err {snap['errors']}  p50 {snap['p50_ms']:.0f} ms  p99 {snap['p99_ms']:.0f} ms  {mode}"
        ).replace("nan ms", "- ms")

    def __call__(self, run) -> None:
        snap = run.snapshot()
        if self.tty:
            frac = self.fraction(snap)
            if frac is None:
                bar = ""
            else:
                filled = int(frac * 24)
                bar = f"[{'#' * filled}{'.' * (24 - filled)}] {frac * 100:3.0f}% "
            self.stream.write("\r\x1b[2K" + bar + self.line(snap))
            self.stream.flush()
        elif snap["elapsed"] - self.last_line >= self.every:
            self.last_line = snap["elapsed"]
            self.stream.write(self.line(snap) + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def cmd_load(args: argparse.Namespace) -> int:
    from gourmetgram import load

    spec = build_spec(args)
    try:
        spec.url = load.resolve_endpoint(args.url, args.path, timeout=spec.timeout)
    except load.EndpointError as e:
        raise UsageError(str(e)) from None
    except KeyboardInterrupt:
        print("gourmetgram load: interrupted before any traffic", file=sys.stderr)
        return EXIT_INTERRUPTED

    run = load.LoadRun(spec)
    progress = None if args.quiet else Progress(spec)
    interrupts = []

    def on_sigint(signum, frame):
        interrupts.append(time.monotonic())
        if len(interrupts) > 1:
            raise KeyboardInterrupt  # a second Ctrl-C does not wait for in-flight requests
        run.stop()

    # SIGTERM (timeout, systemd, kill) ends a run like Ctrl-C: with the summary.
    previous = {sig: signal.signal(sig, on_sigint) for sig in (signal.SIGINT, signal.SIGTERM)}
    print(f"sending {spec.scenario} to {spec.url} (Ctrl-C stops and prints the summary)",
          file=sys.stderr)
    try:
        run.start()
        while not run.wait(0.25):
            if progress:
                progress(run)
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if progress:
            progress(run)
            progress.close()
    result = run.result()
    print(load.format_summary(result))
    if args.report:
        paths = load.write_report(result, Path(args.report))
        print("report: " + ", ".join(str(p) for p in paths.values()))
    sys.stdout.flush()
    return EXIT_INTERRUPTED if result.interrupted else 0


def _one_line_errors(parser: argparse.ArgumentParser) -> None:
    """argparse prints a usage block and leaves unknown options to the top-level
    parser; here every argument error is one line from this command."""

    def error(message: str):
        print(f"gourmetgram load: {message} (see gourmetgram load --help)", file=sys.stderr)
        sys.exit(2)

    known = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        ns, extras = known(args, namespace)
        if extras:
            error("unrecognized arguments: " + " ".join(extras))
        return ns, extras

    parser.error = error
    parser.parse_known_args = parse_known_args


def register(sub) -> None:
    p = sub.add_parser(
        "load",
        help="send the lab's traffic patterns to the stack or one API instance",
        description=(
            "Scenarios: ramp (1,2,3,5,3,2,1 clients, --step s each), steady (--clients N "
            "--duration S), errors (1,3,5,10,5,3,1 clients sending {} or bad base64), images DIR "
            "(every image under DIR, shuffled, once or --loop). --rate R sends R requests/s on a "
            "schedule instead (open loop; latency counts from the scheduled time). "
            "Ctrl-C (or SIGTERM) stops and prints the summary (exit code 130). See docs/load.md."
        ),
    )
    _one_line_errors(p)
    p.add_argument("scenario", choices=SCENARIOS, help="traffic pattern")
    p.add_argument("folder", nargs="?", help="images: the folder of photos (searched recursively)")
    p.add_argument("--url", required=True,
                   help="Nginx front (http://host, sends to /api/predict) or one API instance "
                        "(http://127.0.0.1:8000, sends to /predict); detected from /readyz")
    p.add_argument("--path", help="endpoint path, when detection does not fit (e.g. /api/predict)")
    p.add_argument("--image", metavar="FILE",
                   help="ramp/steady: the photo to send (default: a generated 400x300 JPEG)")
    p.add_argument("--step", metavar="S", help="ramp/errors: seconds per step (default 30, the lab's)")
    p.add_argument("--clients", metavar="N", help="steady/images: concurrent clients (default 1)")
    p.add_argument("--duration", metavar="S",
                   help="steady: seconds (default 60, or until --requests); images: stop after this long")
    p.add_argument("--rate", metavar="R", help="open loop: requests per second (ramp/errors: the peak rate)")
    p.add_argument("--loop", action="store_true", help="images: go round the folder until stopped")
    p.add_argument("--requests", metavar="N", help="stop after this many requests (e.g. the lab's 100)")
    p.add_argument("--timeout", metavar="S", help="seconds per request (default 5, the lab's)")
    p.add_argument("--max-duration", metavar="S",
                   help="hard limit on the whole run in seconds (default 1800)")
    p.add_argument("--max-in-flight", metavar="N",
                   help="open loop: most requests in flight at once (default 64)")
    p.add_argument("--client-ids", metavar="N",
                   help="send X-Client-Id, one of N random ids per request (Nginx's sticky canary split)")
    p.add_argument("--seed", metavar="N", help="random seed for the image order and error bodies")
    p.add_argument("--report", metavar="DIR",
                   help="write requests.csv, summary.json and load.png (latency/throughput plot) here")
    p.add_argument("--quiet", action="store_true", help="no progress, only the summary")
    p.set_defaults(func=cmd_load)
