"""What the shadow stage's mirror costs production: latency of POST /api/predict through
the product's Nginx site with the mirror off and on, on the real stack of the tests
(tests/canary_stack.py: two real API instances, the rendered site, a real Nginx master).

    python bench/bench_shadow.py                 # 5 runs of 10 s per condition
    python bench/bench_shadow.py --quick         # 2 runs of 3 s, to check it works

Load: Debian's wrk, closed loop, keep-alive connections (``-t2 -c4``), posting the same
JSON photo. Conditions, interleaved run by run so that the machine's drift hits them
alike: ``off`` (no mirror), ``on-20`` and ``on-100`` (that share of the predictions
mirrored to a healthy canary), ``on-20-frozen`` (20 % mirrored to a canary frozen with
SIGSTOP: the mirror's 2 s read timeout is all that bounds it; after it the thawed
canary works off its queued copies before the next run starts). Prints p50, p99 and
req/s per condition (min / median / max over the runs) and the ratio of each median
p99 to ``off``'s.

Both API instances and the load generator share the machine's cores, so a mirrored
copy's inference competes with production's for CPU, as it does on a one-VM host.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gourmetgram.canary import routing  # noqa: E402
from tests.canary_stack import BODY, CanaryStack  # noqa: E402

CONDITIONS = {"off": 0, "on-20": 20, "on-100": 100, "on-20-frozen": 20}
LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open("{body}"):read("*a")
"""
UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def seconds(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_wrk(out: str) -> dict[str, float]:
    """p50, p99 (s), req/s and errors from ``wrk --latency``'s report."""
    q = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if "50" not in q or "99" not in q or not rps:
        raise RuntimeError(f"cannot read wrk's report:\n{out}")
    errors = int(non2xx.group(1)) if non2xx else 0
    if sock:
        errors += sum(int(x) for x in sock.groups())
    return {"p50": seconds(q["50"]), "p99": seconds(q["99"]), "rps": float(rps.group(1)),
            "errors": errors}


def run_wrk(url: str, script: Path, duration: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s",
         "-s", str(script), url + "/api/predict"],
        capture_output=True, text=True, timeout=duration + 60, check=True)
    return parse_wrk(out.stdout)


def set_shadow(stack: CanaryStack, percent: int) -> None:
    if percent:
        routing.set_shadow(percent, "bench", layout=stack.layout, services=stack.services)
    else:
        stack.set_weight(0, "bench")


def settle(stack: CanaryStack, quiet_s: float = 3.0, timeout: float = 120.0) -> None:
    """Waits until a thawed canary has worked off the mirrored copies queued while it was
    frozen (its shadow log stops growing), so that they do not load the next run."""
    log = stack.layout.shadow_dir("canary") / "shadow.jsonl"
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        size = log.stat().st_size if log.exists() else 0
        if size != last:
            last, since = size, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.2)


def summary(values: list[float]) -> tuple[float, float, float]:
    return min(values), statistics.median(values), max(values)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--quick", action="store_true", help="2 runs of 3 s")
    p.add_argument("--conditions", default=",".join(CONDITIONS))
    args = p.parse_args(argv)
    if args.quick:
        args.runs, args.duration = 2, 3
    names = [c for c in args.conditions.split(",") if c]
    unknown = [c for c in names if c not in CONDITIONS]
    if unknown or not names:
        p.error(f"unknown condition {unknown[0] if unknown else '(none)'}; known: {', '.join(CONDITIONS)}")
    if args.runs < 1 or args.duration < 1 or args.connections < 1:
        p.error("--runs, --duration and --connections must be at least 1")
    if shutil.which("wrk") is None:
        p.error("wrk is not installed (apt-get install wrk)")

    tmp = Path(tempfile.mkdtemp(prefix="bench-shadow-"))
    try:
        return measure(tmp, args, names)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure(tmp: Path, args: argparse.Namespace, names: list[str]) -> int:
    from app_api.demo_model import build_demo_model

    model = build_demo_model(tmp / "demo-model.pt")
    body = tmp / "body.json"
    body.write_text(json.dumps(BODY))
    script = tmp / "post.lua"
    script.write_text(LUA.format(body=body))
    results: dict[str, list[dict[str, float]]] = {c: [] for c in names}
    with CanaryStack(tmp / "stack", model) as stack:
        run_wrk(stack.url, script, 3, args.connections)  # warm-up
        canary_pid = stack.apis["canary"].proc.pid
        for i in range(args.runs):
            for name in names:
                set_shadow(stack, CONDITIONS[name])
                frozen = name.endswith("frozen")
                if frozen:
                    os.killpg(canary_pid, signal.SIGSTOP)
                try:
                    r = run_wrk(stack.url, script, args.duration, args.connections)
                finally:
                    if frozen:
                        os.killpg(canary_pid, signal.SIGCONT)
                if frozen:
                    settle(stack)
                results[name].append(r)
                print(f"run {i + 1} {name:13s} p50 {r['p50'] * 1e3:7.1f} ms  p99 "
                      f"{r['p99'] * 1e3:7.1f} ms  {r['rps']:6.1f} req/s  errors {r['errors']}",
                      flush=True)
                time.sleep(1)
        set_shadow(stack, 0)
    base = statistics.median(r["p99"] for r in results[names[0]])
    print(f"\nwrk -t2 -c{args.connections} -d{args.duration}s, {args.runs} runs per condition, "
          "min / median / max")
    print(f"| condition | p50 ms | p99 ms | req/s | p99 median / {names[0]}'s | errors |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in names:
        rs = results[name]
        p50 = summary([r["p50"] * 1e3 for r in rs])
        p99 = summary([r["p99"] * 1e3 for r in rs])
        rps = summary([r["rps"] for r in rs])
        ratio = statistics.median(r["p99"] for r in rs) / base
        print(f"| {name} | {p50[0]:.0f} / {p50[1]:.0f} / {p50[2]:.0f} | {p99[0]:.0f} / "
              f"{p99[1]:.0f} / {p99[2]:.0f} | {rps[0]:.1f} / {rps[1]:.1f} / {rps[2]:.1f} | "
              f"{ratio:.2f} | {sum(r['errors'] for r in rs)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
