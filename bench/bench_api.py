"""Speed and memory of the model API as deployed, against the lab's serving pattern,
in one run on one machine with the same model and the same images.

    python bench/bench_api.py                  # the full run (make bench): minutes
    python bench/bench_api.py --quick          # a few seconds per point, to check it works
    python bench/bench_api.py --variants ours,malloc-tuning,jemalloc,batch1,workers1

Servers: ``lab`` (bench/lab_pattern.py under one uvicorn process) and variants of ours
(``gourmetgram serve-api``: gunicorn + uvicorn workers). Load: a closed loop of C
clients (C = 1, 4, 16), each a thread with its own keep-alive connection sending the
next request as soon as the last answer arrives, on a small (400x300) and a large
(1280x1280) JPEG. Prints req/s, p50 and p99 per point (median over --repeat runs), the
ratios of every variant against the lab pattern, and resident memory (RSS and PSS) per
process and for the whole service after the load.

The client runs on the same cores as the server (as wrk does in the issue's figures);
it costs about the same for every server, but the absolute figures are a little lower
than a client on another machine would see.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.images import b64, photo_bytes  # noqa: E402
from tests.procs import Proc, child_env, free_port  # noqa: E402

JEMALLOC = next(
    (p for p in ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
                 "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2") if os.path.exists(p)),
    None,
)


@dataclass
class Variant:
    """One server configuration: extra serve-api arguments and environment."""

    name: str
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    lab: bool = False
    doc: str = ""


VARIANTS = {
    "lab": Variant("lab", lab=True, doc="the lab's pattern: one uvicorn process, def endpoint"),
    "ours": Variant("ours", doc="serve-api defaults: 2 workers, max_batch 8, glibc malloc"),
    "malloc-tuning": Variant(
        "malloc-tuning", env={"GOURMETGRAM_MALLOC_TUNING": "1"},
        doc="glibc malloc keeping freed buffers (MALLOC_MMAP_MAX_=0 ...)"),
    "jemalloc": Variant(
        "jemalloc", env={"LD_PRELOAD": JEMALLOC or ""},
        doc="jemalloc (Debian libjemalloc2) through LD_PRELOAD"),
    "batch1": Variant("batch1", args=["--max-batch", "1"], doc="no batching"),
    "workers1": Variant("workers1", args=["--workers", "1"], doc="one worker"),
    "workers1-threads2": Variant(
        "workers1-threads2", args=["--workers", "1"], env={"FOOD11_TORCH_THREADS": "2"},
        doc="one worker, 2 torch threads"),
}


# --- the model -------------------------------------------------------------------

def make_models(tmp: Path, state_dict: Path | None) -> tuple[Path, Path]:
    """The same weights in the lab's two forms: a state_dict for ours (the default path
    of the lab's published food11.pth) and a whole pickled module for the lab pattern."""
    import torch

    from app_api.model import build_mobilenet_v2

    net = build_mobilenet_v2().eval()
    if state_dict:
        net.load_state_dict(torch.load(state_dict, map_location="cpu", weights_only=True))
    sd_path, pickle_path = tmp / "food11_state_dict.pth", tmp / "food11_pickle.pth"
    torch.save(net.state_dict(), sd_path)
    torch.save(net, pickle_path)
    return sd_path, pickle_path


# --- servers ---------------------------------------------------------------------

def start_server(v: Variant, tmp: Path, sd_model: Path, pickle_model: Path) -> tuple[Proc, str]:
    port = free_port()
    log = tmp / f"{v.name}.log"
    if v.lab:
        argv = [sys.executable, "-m", "uvicorn", "lab_pattern:app", "--app-dir", str(ROOT / "bench"),
                "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                "--no-access-log"]
        env = child_env(LAB_MODEL=str(pickle_model), **v.env)
    else:
        argv = [sys.executable, "-m", "gourmetgram", "serve-api", "--host", "127.0.0.1",
                "--port", str(port), "--model", str(sd_model), "--device", "cpu",
                "--variant", "bench", "--metrics-dir", str(tmp / f"metrics-{v.name}"), *v.args]
        env = child_env(FOOD11_LOG_LEVEL="warning", **v.env)
    proc = Proc(argv, log, env=env)
    url = f"http://127.0.0.1:{port}"
    proc.wait_http(url + "/readyz", timeout=180)
    return proc, url


def process_tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as fh:
                todo.extend(int(c) for c in fh.read().split())
        except OSError:
            pass
    return out


def memory(pid: int) -> list[tuple[int, str, float, float]]:
    """(pid, name, RSS MiB, PSS MiB) of every process of the service."""
    rows = []
    for p in process_tree(pid):
        try:
            vals = {}
            with open(f"/proc/{p}/smaps_rollup") as fh:
                for line in fh:
                    parts = line.split()
                    if parts and parts[0] in ("Rss:", "Pss:"):
                        vals[parts[0]] = int(parts[1]) / 1024
            with open(f"/proc/{p}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        role = "master" if p == pid else "worker"
        if "uvicorn" in cmd and "lab_pattern" in cmd:
            role = "uvicorn"
        rows.append((p, role, vals.get("Rss:", 0.0), vals.get("Pss:", 0.0)))
    return rows


# --- load --------------------------------------------------------------------------

def closed_loop(url: str, body: bytes, concurrency: int, seconds: float) -> dict:
    """C clients, each sending its next request when the last answer arrives."""
    host, port = url.split("//")[1].split(":")
    stop_at = time.perf_counter() + seconds
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    start_gate = threading.Barrier(concurrency + 1)

    def client(i: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        start_gate.wait()
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/predict", body, headers)
                resp = conn.getresponse()
                data = resp.read()
                ok = resp.status == 200 and b"prediction" in data
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
            if ok:
                latencies[i].append(time.perf_counter() - t0)
            else:
                errors[i] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    start_gate.wait()
    t_start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t_start
    lat = sorted(x for xs in latencies for x in xs)
    if not lat:
        return {"rps": 0.0, "p50": float("nan"), "p99": float("nan"), "n": 0, "errors": sum(errors)}
    return {
        "rps": len(lat) / elapsed,
        "p50": lat[len(lat) // 2] * 1000,
        "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
        "n": len(lat),
        "errors": sum(errors),
    }


def median_of(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


# --- report ------------------------------------------------------------------------

def print_results(results: dict, mem: dict, variants: list[str], baseline: str | None) -> None:
    print("\n== throughput and latency (median of the repeats) ==")
    print(f"{'server':<20}{'image':<7}{'conc':>5}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'n':>7}"
          f"{'err':>5}")
    for (name, image, c), r in results.items():
        print(f"{name:<20}{image:<7}{c:>5}{r['rps']:>9.1f}{r['p50']:>9.1f}{r['p99']:>9.1f}"
              f"{int(r['n']):>7}{int(r['errors']):>5}")
    base_name = baseline or ("lab" if "lab" in variants else variants[0])
    if len(variants) > 1:
        print(f"\n== ratios against {base_name} (throughput: higher is better; "
              "latency: lower is better) ==")
        print(f"{'server':<20}{'image':<7}{'conc':>5}{'req/s x':>10}{'p50 x':>9}{'p99 x':>9}")
        for (name, image, c), r in results.items():
            base = results.get((base_name, image, c))
            if name == base_name or not base or not base["rps"]:
                continue
            print(f"{name:<20}{image:<7}{c:>5}{r['rps'] / base['rps']:>10.2f}"
                  f"{r['p50'] / base['p50']:>9.2f}{r['p99'] / base['p99']:>9.2f}")
    print("\n== resident memory after the load (MiB) ==")
    print(f"{'server':<20}{'process':<10}{'pid':>8}{'RSS':>9}{'PSS':>9}")
    for name, rows in mem.items():
        for pid, role, rss, pss in rows:
            print(f"{name:<20}{role:<10}{pid:>8}{rss:>9.0f}{pss:>9.0f}")
        print(f"{name:<20}{'total':<10}{'':>8}{sum(r[2] for r in rows):>9.0f}"
              f"{sum(r[3] for r in rows):>9.0f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default="lab,ours",
                   help=f"comma-separated, run in this order; known: {', '.join(VARIANTS)}")
    p.add_argument("--concurrency", default="1,4,16")
    p.add_argument("--images", default="small,large")
    p.add_argument("--seconds", type=float, default=10.0, help="per point and repeat")
    p.add_argument("--repeat", type=int, default=3, help="runs per point; the median is shown")
    p.add_argument("--quick", action="store_true", help="1.5 s per point, one repeat")
    p.add_argument("--model", type=Path, help="a MobileNetV2 Food-11 state_dict "
                   "(default: random weights, as in the issue's figures)")
    p.add_argument("--baseline", help="the variant the ratios are against "
                   "(default: lab when it runs, else the first)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.repeat = 1.5, 1
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    if args.baseline and args.baseline not in names:
        p.error(f"--baseline {args.baseline} is not among --variants")
    if "jemalloc" in names and not JEMALLOC:
        p.error("variant jemalloc: libjemalloc.so.2 not found (apt install libjemalloc2)")
    concurrency = [int(c) for c in args.concurrency.split(",")]
    images = {"small": photo_bytes(False), "large": photo_bytes(True)}
    bodies = {k: json.dumps({"image": b64(images[k])}).encode()
              for k in args.images.split(",")}

    tmp = Path(tempfile.mkdtemp(prefix="gg-bench-"))
    results: dict = {}
    mem: dict = {}
    try:
        sd_model, pickle_model = make_models(tmp, args.model)
        print(f"cores: {os.cpu_count()}; model: MobileNetV2 Food-11 "
              f"({'given weights' if args.model else 'random weights'}); "
              f"{args.seconds:g} s per point, median of {args.repeat}")
        for name in names:
            v = VARIANTS[name]
            print(f"-- {name}: {v.doc}", flush=True)
            proc, url = start_server(v, tmp, sd_model, pickle_model)
            try:
                for key, body in bodies.items():
                    closed_loop(url, body, max(concurrency), min(2.0, args.seconds))  # warm up
                    for c in concurrency:
                        runs = [closed_loop(url, body, c, args.seconds) for _ in range(args.repeat)]
                        results[(name, key, c)] = r = median_of(runs)
                        print(f"   {key:<6} c={c:<3} {r['rps']:7.1f} req/s  p50 {r['p50']:7.1f} ms"
                              f"  p99 {r['p99']:7.1f} ms  errors {int(r['errors'])}", flush=True)
                mem[name] = memory(proc.pid)
            finally:
                proc.stop()
        print_results(results, mem, names, args.baseline)
        if args.json:
            args.json.write_text(json.dumps({
                "results": [dict(server=k[0], image=k[1], concurrency=k[2], **v)
                            for k, v in results.items()],
                "memory": {k: [dict(zip(("pid", "role", "rss_mib", "pss_mib"), r, strict=True))
                               for r in rows] for k, rows in mem.items()},
            }, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
