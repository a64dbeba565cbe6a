"""The canary controller's scorecard: many rollouts on the real stack, for good canaries
and for a catalogue of bad ones, and per kind how often the controller rolled back, how
fast, and how many user requests failed meanwhile.

    make bench-rollouts                                   # the full scorecard (~30 min)
    PYTHONPATH=. .venv/bin/python bench/bench_rollouts.py --runs-good 10 --runs-bad 5
    PYTHONPATH=. .venv/bin/python bench/bench_rollouts.py --kinds good,hang --runs-bad 1

The stack is the tests' (tests/canary_stack.py, tests/gourmetgram/canary/analysis_rig.py):
two real API instances (gunicorn + uvicorn, the demo model), the product's Nginx site
moved by the real routing library, Debian's mtail on its access log and Debian's
Prometheus scraping every second. The product's load generator (gourmetgram.load)
sends photo crops through Nginx from a few closed-loop clients during the whole bench;
its records are the users' view. Each rollout is one ``Controller.run`` (the loop the
always-on unit runs per rollout, ``gourmetgram canary run --once``) from weight 0.

The bad canaries come from outside the product (tests/canary_faults.py): model files
(random weights, a shifted class mix, swapped colour channels), an API whose real app
has a fault inside it (50 ms slower, HTTP 500 on some inputs), and two faults that begin
when the canary first gets traffic: a crash loop (killed a second after each restart,
as under systemd's Restart=) and a hang (SIGSTOP: connections are accepted, nothing
answers). Time to rollback counts from the first step to the canary (the moment it gets
users), in seconds and in intervals.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gourmetgram.canary import routing  # noqa: E402
from gourmetgram.canary.analysis import FAIL  # noqa: E402
from gourmetgram.canary.analysis_settings import AnalysisSettings  # noqa: E402
from gourmetgram.canary.rollout import PROMOTE, ROLLBACK, CanaryLibraryActuator, Controller  # noqa: E402
from gourmetgram.commands.analysis import upstreams_of  # noqa: E402
from gourmetgram.load import LoadRun, LoadSpec, Payloads, Phase  # noqa: E402
from tests import canary_faults  # noqa: E402
from tests.canary_stack import CanaryStack  # noqa: E402
from tests.gourmetgram.canary.analysis_rig import ControllerRig, CrashLoop  # noqa: E402
from tests.images import LARGE_PHOTO, SMALL_PHOTO, b64, encode, photo_bytes  # noqa: E402
from tests.procs import ApiServer  # noqa: E402

# Nginx's API timeout on the bench stack (--api-timeout): scaled down with the intervals,
# so a hanging canary's requests are retried on production within the load generator's
# timeout.
API_TIMEOUT_S = 2
USER_TIMEOUT_S = 10.0
ERRORS_ONE_IN = 6
SLOW_S = 0.05


@dataclass(frozen=True)
class Kind:
    name: str
    what: str
    bad: bool = True
    model: str = "good"  # which model file the canary is shipped with
    fault: str = ""  # FaultyApiServer's fault (tests/canary_faults.py)
    trigger: str = ""  # "crash" or "hang": begins at the first step to the canary


KINDS = {k.name: k for k in (
    Kind("good", "the demo model again, a new version", bad=False),
    Kind("crash-loop", "killed 1 s after each restart, from its first traffic on", trigger="crash"),
    Kind("hang", "frozen (SIGSTOP) from its first traffic on", trigger="hang"),
    Kind("errors", f"HTTP 500 on about 1 input in {ERRORS_ONE_IN}", fault=f"errors:{ERRORS_ONE_IN}"),
    Kind("slow-50ms", "every /predict 50 ms slower", fault=f"slow:{SLOW_S}"),
    Kind("random-weights", "MobileNetV2 with random weights (the wrong model)", model="random"),
    Kind("class-shift", "demo model with Dessert's logits raised so a quarter of the photos move there",
         model="class-shift"),
    Kind("bgr-channels", "demo model fed BGR instead of RGB (first conv's channels reversed)",
         model="bgr"),
)}


def build_models(out: Path) -> dict[str, Path]:
    from app_api.demo_model import build_demo_model

    demo = build_demo_model(out / "demo.pt")
    return {
        "good": demo,
        "random": canary_faults.random_weights_model(out / "random.pth"),
        "class-shift": canary_faults.class_shift_model(demo, out / "class-shift.pt", photo_pool()),
        "bgr": canary_faults.swapped_channels_model(demo, out / "bgr.pt"),
    }


def photo_pool(n: int = 48, seed: int = 0) -> list[bytes]:
    """JPEG crops (random place and size, mirrored, turned) of the two shared photos:
    real food, so a preprocessing bug or a shifted class moves real predictions."""
    from PIL import Image, ImageOps

    photos = [Image.open(p).convert("RGB") for p in (SMALL_PHOTO, LARGE_PHOTO) if p.exists()]
    if not photos:
        photos = [Image.open(io.BytesIO(photo_bytes())).convert("RGB")]
    rng = random.Random(seed)
    out = []
    for i in range(n):
        im = photos[i % len(photos)]
        w, h = im.size
        s = rng.uniform(0.35, 1.0)
        cw, ch = int(w * s), int(h * s)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        crop = im.crop((x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            crop = ImageOps.mirror(crop)
        crop = crop.rotate(rng.choice((0, 90, 180, 270)), expand=True)
        crop = crop.resize((320, max(1, round(320 * crop.size[1] / crop.size[0]))))
        out.append(encode(crop, quality=88))
    return out


def cycling(images: list[bytes], seed: int = 1) -> Payloads:
    """The pool's request bodies in random order, forever."""
    rng = random.Random(seed)
    bodies = [json.dumps({"image": b64(b)}).encode() for b in images]
    return Payloads(lambda: (rng.choice(bodies), "photo"))


@dataclass
class Run:
    kind: str
    outcome: str  # rollback, promote, or the last decision when it ran out of steps
    seconds: float  # first step to the canary -> the last decision
    intervals: float
    requests: int
    failed: int
    canary_answered: int
    failed_checks: list[str] = field(default_factory=list)
    reason: str = ""
    failures: dict[str, int] = field(default_factory=dict)  # HTTP status or client error -> n
    decisions: list[str] = field(default_factory=list)
    retried: int = 0  # answered after a resend: a reload closed their keep-alive connection


class FaultTrigger(CanaryLibraryActuator):
    """The routing library, plus a fault begun right after the first step to the canary."""

    def __init__(self, stack: CanaryStack, start_fault):
        super().__init__(layout=stack.layout, services=stack.services)
        self.start_fault = start_fault

    def set_weight(self, weight: int, reason: str) -> None:
        super().set_weight(weight, reason)
        if weight > 0 and self.start_fault is not None:
            start, self.start_fault = self.start_fault, None
            start()


class Scorecard:
    """One stack for the whole bench; a ship puts each kind's canary in place."""

    def __init__(self, tmp: Path, interval: float, window: float, clients: int,
                 max_steps: int, log=print, api_timeout: int = API_TIMEOUT_S):
        self.tmp = tmp
        self.api_timeout = api_timeout
        self.interval = interval
        self.window = window
        self.clients = clients
        self.max_steps = max_steps
        self.log = log
        self.models = build_models(tmp / "models")
        self.kind: Kind | None = None
        self.ships = 0
        self.rig: ControllerRig | None = None
        self.load: LoadRun | None = None
        self.last_change = 0.0

    # -- the stack ----------------------------------------------------------------------
    def __enter__(self) -> Scorecard:
        good = self.models["good"]
        stack = CanaryStack(
            self.tmp / "stack", good, canary_server=self._canary_server,
            models={"production": {"path": str(good), "version": "v1"},
                    "canary": {"path": str(good), "version": "v1-canary"}},
            scrape_interval="1s", api_timeout_seconds=self.api_timeout)
        self.rig = ControllerRig(self.tmp, stack).start()
        spec = LoadSpec(url=stack.url + "/api/predict", phases=[Phase(None, self.clients)],
                        payloads=cycling(photo_pool()), scenario="scorecard",
                        timeout=USER_TIMEOUT_S, max_duration=6 * 3600)
        self.load = LoadRun(spec).start()
        return self

    def __exit__(self, *exc) -> None:
        if self.load is not None:
            self.load.stop()
            self.load.wait(USER_TIMEOUT_S + 10)
        if self.rig is not None:
            self.rig.stop()

    @property
    def stack(self) -> CanaryStack:
        return self.rig.stack

    def _canary_server(self, root: Path, model: Path, port: int, version: str):
        if self.kind is not None and self.kind.fault:
            return canary_faults.FaultyApiServer(self.kind.fault, root, model, port=port,
                                                 model_version=version)
        return ApiServer(root, model, variant="canary", port=port,
                         extra_args=["--model-version", version])

    def ship(self, kind: Kind) -> None:
        self.kind = kind
        self.ships += 1
        routing.ship(self.models[kind.model], f"{kind.name}-{self.ships}", "scorecard",
                     layout=self.stack.layout, services=self.stack.services)
        self.last_change = time.monotonic()

    def restore_production(self) -> None:
        """After a bad canary was promoted: the demo model back on production."""
        self.log("  (a bad canary was promoted: production goes back to the demo model)")
        self.ship(KINDS["good"])
        routing.promote("scorecard: production restored", layout=self.stack.layout,
                        services=self.stack.services)

    def settings(self, state_dir: Path) -> AnalysisSettings:
        """The product's defaults except: short interval and window, minimum requests
        scaled to the short windows, a progress deadline of 10 intervals."""
        n = 12
        return AnalysisSettings(
            prometheus_url=self.rig.prom.url, interval_s=self.interval, window_s=self.window,
            scrape_interval_s=1, step_weight=25, max_weight=50, failed_checks_threshold=2,
            progress_deadline_s=10 * self.interval, state_dir=state_dir, metrics_port=0,
            error_rate_min_requests=n, latency_min_requests=n, confidence_min_requests=n,
            class_mix_min_requests=n, drift_min_requests=n, sample_ratio_min_requests=n,
            upstream_min_requests=n,
            # The scorecard judges the weighted steps; the shadow stage has its own tests
            # (tests/gourmetgram/canary/test_shadow_stage.py) and bench (bench_shadow.py).
            shadow_intervals=0,
        )

    # -- one rollout --------------------------------------------------------------------
    def rollout(self, kind: Kind, n: int) -> Run:
        st = routing.load_state(self.stack.layout)
        if kind != self.kind or not kind.bad or st.models["canary"] == st.models["production"]:
            self.ship(kind)
        # The first analysis's window must not reach back into the previous rollout or the
        # canary's restart by the ship (its down scrapes would fail `up`).
        time.sleep(max(0.0, self.last_change + self.window + 1 - time.monotonic()))
        fault = Fault(self.stack, kind.trigger)
        c = Controller(self.settings(self.tmp / "state" / f"{kind.name}-{n}"),
                       FaultTrigger(self.stack, fault.start if kind.trigger else None),
                       upstreams=upstreams_of(self.stack.stack))
        t0 = self.load.elapsed()
        try:
            c.run(max_steps=self.max_steps)
        finally:
            fault.stop()
        t1 = self.load.elapsed()
        self.last_change = time.monotonic()
        if c.history and c.history[-1].action == PROMOTE and kind.bad:
            self.restore_production()
        return self._record(kind, c, t0, t1)

    def _record(self, kind: Kind, c: Controller, t0: float, t1: float) -> Run:
        records = [r for r in self.load.result().records if t0 <= r.sent <= t1]
        failures = Counter(r.error or f"HTTP {r.status}" for r in records if not 200 <= r.status < 300)
        first = next((d for d in c.history if d.weight_after > 0), None)
        last = c.history[-1]
        took = last.at - first.at if first else float("nan")
        checks = sorted({ch.check for d in c.history for ch in d.checks if ch.verdict == FAIL})
        return Run(kind.name, last.action, took, took / self.interval, len(records),
                   sum(failures.values()), sum(1 for r in records if r.variant == "canary"),
                   checks, last.reason, failures=dict(failures),
                   decisions=[d.line() for d in c.history],
                   retried=sum(1 for r in records if r.retried))


class Fault:
    """A crash loop or a hang, begun by ``start()`` and undone by ``stop()`` (the canary
    answers again afterwards)."""

    def __init__(self, stack: CanaryStack, trigger: str):
        self.stack = stack
        self.trigger = trigger
        self.crash: CrashLoop | None = None
        self.frozen: int | None = None

    def start(self) -> None:
        if self.trigger == "crash":
            self.crash = CrashLoop(self.stack).start()
        elif self.trigger == "hang":
            self.frozen = self.stack.apis["canary"].proc.pid
            os.killpg(self.frozen, signal.SIGSTOP)

    def stop(self) -> None:
        if self.crash is not None:
            self.crash.stop()
            self.stack.apis["canary"].wait_ready()
        if self.frozen is not None:
            os.killpg(self.frozen, signal.SIGCONT)
            self.stack.apis["canary"].wait_ready()


# -- the table ------------------------------------------------------------------------------

def spread(values: list[float], fmt: str = "{:.1f}") -> str:
    values = [v for v in values if v == v]
    if not values:
        return "-"
    med = fmt.format(statistics.median(values))
    return med if len(values) == 1 else f"{med} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def table(runs: list[Run]) -> str:
    head = ("| kind | runs | rolled back | time to rollback, s: median (min-max) | in intervals "
            "| failed user requests / requests in the rollouts | canary's answers | checks that failed "
            "| other outcomes |\n" + "|---" * 9 + "|")
    lines = [head]
    for name in KINDS:
        rs = [r for r in runs if r.kind == name]
        if not rs:
            continue
        back = [r for r in rs if r.outcome == ROLLBACK]
        checks = Counter(c for r in back for c in r.failed_checks)
        others = Counter(r.outcome for r in rs if r.outcome != ROLLBACK)
        lines.append(
            f"| {name} | {len(rs)} | {len(back)}/{len(rs)} | {spread([r.seconds for r in back])} "
            f"| {spread([r.intervals for r in back])} "
            f"| {sum(r.failed for r in rs)} / {sum(r.requests for r in rs)} "
            f"| {sum(r.canary_answered for r in rs)} "
            f"| {', '.join(f'{c} {k}' for c, k in checks.most_common()) or '-'} "
            f"| {', '.join(f'{k} {v}' for k, v in others.items()) or '-'} |")
    good = [r for r in runs if not KINDS[r.kind].bad]
    if good:
        promoted = [r for r in good if r.outcome == PROMOTE]
        false = sum(1 for r in good if r.outcome == ROLLBACK)
        lines.append(f"\nGood canaries: {len(promoted)}/{len(good)} promoted, time to promote "
                     f"{spread([r.seconds for r in promoted])} s; false rollbacks {false}/{len(good)}.")
    return "\n".join(lines)


def run_scorecard(tmp: Path, plan: list[tuple[str, int]], interval: float, window: float,
                  clients: int, max_steps: int, log=print,
                  api_timeout: int = API_TIMEOUT_S) -> list[Run]:
    """``plan``: (kind, runs) in order. Returns every rollout's record."""
    runs = []
    with Scorecard(tmp, interval, window, clients, max_steps, log, api_timeout) as sc:
        for name, n in plan:
            for i in range(n):
                r = sc.rollout(KINDS[name], i)
                runs.append(r)
                log(f"{name} #{i + 1}: {r.outcome} after {r.seconds:.1f} s "
                    f"({r.intervals:.1f} intervals), failed {r.failed}/{r.requests} {r.failures}, "
                    f"sent again {r.retried}, "
                    f"checks failed: {', '.join(r.failed_checks) or '-'}; {r.reason}")
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kinds", default=",".join(KINDS),
                    help=f"comma-separated, from: {', '.join(KINDS)} (default: all)")
    ap.add_argument("--runs-good", type=int, default=10, help="rollouts of good canaries (10)")
    ap.add_argument("--runs-bad", type=int, default=5, help="rollouts per bad kind (5)")
    ap.add_argument("--interval", type=float, default=4.0, help="seconds between analyses (4)")
    ap.add_argument("--window", type=float, default=8.0, help="seconds per analysis window (8)")
    ap.add_argument("--clients", type=int, default=3, help="closed-loop load clients (3)")
    ap.add_argument("--max-steps", type=int, default=20,
                    help="analyses per rollout at most (20; the progress deadline is 10 intervals)")
    ap.add_argument("--api-timeout", type=int, default=API_TIMEOUT_S,
                    help="Nginx's API timeout on the bench stack, seconds (2; the product's is 30)")
    ap.add_argument("--out", type=Path, help="write every rollout (decisions too) as JSON here")
    args = ap.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        ap.error(f"unknown kind {unknown[0]!r}; known: {', '.join(KINDS)}")
    plan = [(name, args.runs_bad if KINDS[name].bad else args.runs_good) for name in kinds]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-rollouts-") as tmp:
        runs = run_scorecard(Path(tmp), plan, args.interval, args.window, args.clients,
                             args.max_steps, api_timeout=args.api_timeout)
    took = time.monotonic() - started
    print()
    print(table(runs))
    print(f"\n{len(runs)} rollouts in {took / 60:.1f} min (interval {args.interval:g} s, window "
          f"{args.window:g} s, {args.clients} clients, API timeout {args.api_timeout} s, "
          f"load average {os.getloadavg()[0]:.1f})")
    if args.out:
        args.out.write_text(json.dumps([r.__dict__ for r in runs], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
