"""Speed and memory of the model API, against the lab's serving pattern, in one run on
one machine with the same model (the lab's MobileNetV2) and the same image.

    python bench/bench_api.py                  # the full run (make bench): minutes
    python bench/bench_api.py --quick          # 2 s per run, 2 runs, to check it works
    python bench/bench_api.py --variants lab,onnx,onnx-threads1,onnx-reuseport --repeat 7
    python bench/bench_api.py --variants onnx --against HEAD~1 --interleave   # a code change

Servers: ``lab`` (bench/lab_pattern.py under one uvicorn process) and variants of ours
(``gourmetgram serve-api``: gunicorn + uvicorn workers; torch or ONNX Runtime; one
shared listening socket, SO_REUSEPORT, or one process with two inference threads).
Load: wrk (Debian's ``wrk``), a closed loop of C keep-alive connections (C = 16 and 1)
each sending the next request when the last answer arrives, the lab's JSON form with
a 400x300 JPEG. Each configuration runs ``--repeat`` times (at least 5 for the
figures in docs/api.md); each wrk run opens its connections anew, so they land on
the workers anew; it prints min/median/max of req/s and latency so the
connection luck shows, how many connections each worker held, the ratios against
the lab in the same run, the server's CPU per request by thread (event loop, decode,
inference, drift: where a request's CPU goes), and resident memory (RSS and PSS) per
process.

wrk runs on the same cores as the servers; on a 2-core machine it takes a share of
the CPU from every server alike. ``--against REV`` adds the ``onnx`` defaults served
from git revision REV (a temporary worktree), named ``onnx@REV``, so a code change is
measured against its parent in one run; ``--interleave`` starts every server first and
takes their runs in turn, so a slow minute of the machine falls on all of them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

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
    tree: Path | None = None  # another checkout to serve from (--against)


VARIANTS = {
    "lab": Variant("lab", lab=True, doc="the lab's pattern: one uvicorn process, def endpoint"),
    "torch": Variant("torch", args=["--runtime", "torch"],
                     doc="torch eager, 2 workers on one shared socket (the old default)"),
    "onnx": Variant("onnx", args=["--runtime", "onnx"],
                    doc="ONNX Runtime, serve-api defaults: 2 workers on one shared socket, "
                        "2 inference threads each, no batching, a lone forward pass on 2 "
                        "intra-op threads"),
    "onnx-solo0": Variant(
        "onnx-solo0", args=["--runtime", "onnx"], env={"FOOD11_SOLO_THREADS": "0"},
        doc="ONNX Runtime, serve-api defaults but a lone forward pass on one thread too "
            "(no solo session)"),
    "onnx-threads1": Variant(
        "onnx-threads1", args=["--runtime", "onnx", "--inference-threads", "1"],
        doc="ONNX Runtime, 2 workers on one shared socket, 1 inference thread each"),
    "onnx-reuseport": Variant(
        "onnx-reuseport", args=["--runtime", "onnx", "--inference-threads", "1"],
        env={"FOOD11_REUSE_PORT": "1"},
        doc="ONNX Runtime, 2 workers with SO_REUSEPORT, 1 inference thread each"),
    "onnx-intra2": Variant(
        "onnx-intra2", args=["--runtime", "onnx", "--inference-threads", "1"],
        env={"FOOD11_TORCH_THREADS": "2"},
        doc="ONNX Runtime, 2 workers on one shared socket, 1 inference thread each running "
            "its forward passes on 2 intra-op threads"),
    "onnx-2x2": Variant(
        "onnx-2x2", args=["--runtime", "onnx"], env={"FOOD11_TORCH_THREADS": "2"},
        doc="ONNX Runtime, serve-api defaults but 2 intra-op threads per forward pass"),
    "onnx-1proc": Variant(
        "onnx-1proc", args=["--runtime", "onnx", "--workers", "1"],
        doc="ONNX Runtime, 1 worker with 2 inference threads"),
    "torch-1proc": Variant(
        "torch-1proc", args=["--runtime", "torch", "--workers", "1", "--inference-threads", "2"],
        doc="torch, 1 worker with 2 inference threads"),
    "malloc-tuning": Variant(
        "malloc-tuning", args=["--runtime", "torch"], env={"GOURMETGRAM_MALLOC_TUNING": "1"},
        doc="torch, glibc malloc keeping freed buffers (MALLOC_MMAP_MAX_=0 ...)"),
    "jemalloc": Variant(
        "jemalloc", args=["--runtime", "torch"], env={"LD_PRELOAD": JEMALLOC or ""},
        doc="torch, jemalloc (Debian libjemalloc2) through LD_PRELOAD"),
    "batch2": Variant("batch2", args=["--runtime", "onnx", "--max-batch", "2"],
                      doc="ONNX Runtime, batches of at most 2"),
    "batch4": Variant("batch4", args=["--runtime", "onnx", "--max-batch", "4"],
                      doc="ONNX Runtime, batches of at most 4"),
    "batch8": Variant("batch8", args=["--runtime", "onnx", "--max-batch", "8"],
                      doc="ONNX Runtime, batches of at most 8"),
}


# --- the model -------------------------------------------------------------------

def make_models(tmp: Path, state_dict: Path | None) -> tuple[Path, Path]:
    """The same weights in the lab's two forms: a state_dict for ours (the default path
    of the lab's published food11.pth) and a whole pickled module for the lab pattern."""
    import torch

    from app_api.model import build_mobilenet_v2
    from app_api.onnx_export import export_onnx

    net = build_mobilenet_v2().eval()
    if state_dict:
        net.load_state_dict(torch.load(state_dict, map_location="cpu", weights_only=True))
    sd_path, pickle_path = tmp / "food11_state_dict.pth", tmp / "food11_pickle.pth"
    torch.save(net.state_dict(), sd_path)
    torch.save(net, pickle_path)
    _, check = export_onnx(sd_path)
    print(f"ONNX export: max probability difference {check['max_prob_diff']:.1e} against torch, "
          f"top-1 mismatches {len(check['top1_mismatches'])} of {check['images']}")
    return sd_path, pickle_path


# --- the ceiling -----------------------------------------------------------------

@dataclass
class Ceiling:
    """What the CPU allows: the served export's forward pass alone, at batch 1 on one
    thread (as each inference thread runs it by default), and the requests per second
    every core would give doing nothing else. Serving can only approach it: decoding,
    HTTP and wrk itself take their share. Absolute req/s differ much between machines
    (the CPU's vector units and clock); the share of this ceiling much less."""

    forward_ms: list[float]
    cores: int

    @property
    def rps(self) -> float:
        return self.cores * 1000 / statistics.median(self.forward_ms)


def forward_ceiling(sd_model: Path, repeat: int, iterations: int = 50) -> Ceiling:
    """Times the export that make_models wrote beside ``sd_model``, opened as the API
    opens it, on export-onnx's check images."""
    from app_api.inference import load_onnx
    from app_api.onnx_export import check_images
    from bench.bench_precision import ms_per_image

    model = load_onnx(sd_model)
    images = check_images(model.info.preprocessing.crop, 8)
    return Ceiling([ms_per_image(model, images, 1, iterations) for _ in range(repeat)],
                   os.cpu_count() or 1)


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
    if v.tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(v.tree), env["PYTHONPATH"]])
    proc = Proc(argv, log, env=env, cwd=v.tree)
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


def worktree(rev: str, tmp: Path) -> Variant:
    """The ``onnx`` defaults served from a checkout of ``rev`` in ``tmp`` (removed by
    ``remove_worktree``)."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev],
                         capture_output=True, text=True)
    if sha.returncode != 0:
        raise ValueError(f"--against {rev}: not a revision of this repository "
                         f"({sha.stderr.strip()})")
    path = tmp / f"tree-{sha.stdout.strip()}"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(path),
                    sha.stdout.strip()], check=True)
    return Variant(f"onnx@{rev}", args=VARIANTS["onnx"].args, tree=path,
                   doc=f"the onnx defaults as of {rev} ({sha.stdout.strip()})")


def remove_worktree(path: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
                   capture_output=True)


# --- load --------------------------------------------------------------------------

WRK_SCRIPT = """
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
"""


def wrk_inputs(folder: Path) -> tuple[Path, Path]:
    """The request body (the lab's JSON form, the 400x300 JPEG) and wrk's script that
    posts it, written into ``folder``."""
    body_file, script = folder / "body.json", folder / "post.lua"
    body_file.write_text(json.dumps({"image": b64(photo_bytes(False))}))
    script.write_text(WRK_SCRIPT)
    return body_file, script


def connections_per_process(port: int, pids: list[int]) -> list[int]:
    """Established connections on ``port`` held by each of ``pids`` (ss -tnp)."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True).stdout
    held = Counter(int(m) for m in re.findall(r"pid=(\d+)", out))
    return [held.get(p, 0) for p in pids]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes used so far (/proc/PID/stat)."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


# Threads by what they do: the API names its own (app_api/thread_names.py), a trailing
# "_N" is its index in a pool; each process's main thread runs the event loop.
THREAD_ROLES = ("event loop", "decode", "inference", "drift", "other")


def thread_cpu(pids: list[int]) -> Counter:
    """CPU seconds used so far by the processes' threads, summed by role."""
    out: Counter = Counter()
    tick = os.sysconf("SC_CLK_TCK")
    for p in pids:
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tids:
            try:
                with open(f"/proc/{p}/task/{t}/stat") as fh:
                    comm, rest = fh.read().split(" (", 1)[1].rsplit(")", 1)
            except OSError:
                continue
            fields = rest.split()
            role = "event loop" if int(t) == p else re.sub(r"_\d+$", "", comm)
            out[role if role in THREAD_ROLES else "other"] += (int(fields[11]) + int(fields[12])) / tick
    return out


def cpu_snapshot(pids: list[int]) -> tuple[float, Counter]:
    return cpu_seconds(pids), thread_cpu(pids)


def cpu_since(pids: list[int], before: tuple[float, Counter]) -> tuple[float, Counter]:
    """CPU seconds used since ``before`` (a cpu_snapshot): in all, and by role. "other"
    is what the named roles leave of the total: a thread that ended meanwhile (the lab's
    pool) is gone from /proc/PID/task, but its CPU stays in /proc/PID/stat."""
    total = cpu_seconds(pids) - before[0]
    roles = thread_cpu(pids)
    roles.subtract(before[1])
    roles["other"] = total - sum(roles[r] for r in THREAD_ROLES if r != "other")
    return total, roles


def wrk_run(url: str, body_file: Path, script: Path, concurrency: int, seconds: float,
            pids: list[int]) -> dict:
    """One closed-loop wrk run; the connections per process are sampled mid-run, and
    the server's CPU time per request is measured (a figure that other load on the
    machine changes much less than req/s). ``url`` is the whole address posted to."""
    port = urlsplit(url).port or 80
    before = cpu_snapshot(pids)
    held: list[int] = []
    sampler = threading.Timer(seconds / 2, lambda: held.extend(connections_per_process(port, pids)))
    sampler.start()
    res = subprocess.run(
        ["wrk", "-t", str(min(2, concurrency)), "-c", str(concurrency), "-d", f"{seconds:g}s",
         "--latency", "--timeout", "30s", "-s", str(script), url],
        capture_output=True, text=True, env={**os.environ, "BENCH_BODY": str(body_file)},
    )
    sampler.join()
    cpu, by_thread = cpu_since(pids, before)
    out = res.stdout
    if res.returncode != 0 or "Requests/sec" not in out:
        raise RuntimeError(f"wrk failed: {res.stderr or out}")

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    done = re.search(r"(\d+) requests in", out)
    requests = max(1, int(done.group(1)))
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "cpu_ms": 1000 * cpu / requests,
        "cpu_ms_by_thread": {role: 1000 * by_thread[role] / requests for role in THREAD_ROLES},
        "p50": ms("50"),
        "p99": ms("99"),
        "errors": (int(bad.group(1)) if bad else 0)
        + (sum(int(g) for g in sock.groups()) if sock else 0),
        "held": held,
    }


def spread(runs: list[dict], key: str) -> tuple[float, float, float]:
    values = [r[key] for r in runs]
    return min(values), statistics.median(values), max(values)


# --- report ------------------------------------------------------------------------

def print_results(results: dict, mem: dict, variants: list[str], baseline: str | None,
                  ceiling: Ceiling | None = None) -> None:
    print("\n== throughput and latency: min / median / max over the runs ==")
    print(f"{'server':<16}{'conc':>5}{'req/s':>22}{'p50 ms':>22}{'p99 ms (median)':>17}"
          f"{'CPU ms/req':>11}{'err':>5}  connections per worker, each run")
    for (name, c), runs in results.items():
        rps, p50 = spread(runs, "rps"), spread(runs, "p50")
        held = " ".join("/".join(str(h) for h in r["held"]) for r in runs)
        print(f"{name:<16}{c:>5}{rps[0]:>8.1f}{rps[1]:>7.1f}{rps[2]:>7.1f}"
              f"{p50[0]:>8.1f}{p50[1]:>7.1f}{p50[2]:>7.1f}{spread(runs, 'p99')[1]:>17.1f}"
              f"{spread(runs, 'cpu_ms')[1]:>11.1f}{sum(r['errors'] for r in runs):>5}  {held}")
    base_name = baseline or ("lab" if "lab" in variants else variants[0])
    if len(variants) > 1:
        print(f"\n== ratios against {base_name} in this run (medians; req/s: higher is better, "
              "p50 and CPU per request: lower is better; min/max: slowest over fastest run) ==")
        print(f"{'server':<16}{'conc':>5}{'req/s x':>10}{'p50 x':>9}{'CPU/req x':>11}{'min/max':>9}")
        for (name, c), runs in results.items():
            base = results.get((base_name, c))
            if name == base_name or not base:
                continue
            rps, brps = spread(runs, "rps"), spread(base, "rps")
            print(f"{name:<16}{c:>5}{rps[1] / brps[1]:>10.2f}"
                  f"{spread(runs, 'p50')[1] / spread(base, 'p50')[1]:>9.2f}"
                  f"{spread(runs, 'cpu_ms')[1] / spread(base, 'cpu_ms')[1]:>11.2f}"
                  f"{rps[0] / rps[2]:>9.2f}")
    print("\n== server CPU per request by thread (ms, median over the runs; lab: its thread "
          "pool is \"other\") ==")
    print(f"{'server':<16}{'conc':>5}" + "".join(f"{role:>12}" for role in THREAD_ROLES)
          + f"{'total':>9}")
    for (name, c), runs in results.items():
        print(f"{name:<16}{c:>5}" + "".join(
            f"{statistics.median(r['cpu_ms_by_thread'][role] for r in runs):>12.2f}"
            for role in THREAD_ROLES) + f"{spread(runs, 'cpu_ms')[1]:>9.2f}")
    if ceiling is not None:
        fwd = statistics.median(ceiling.forward_ms)
        print(f"\n== against the CPU's ceiling: forward pass {min(ceiling.forward_ms):.1f}/{fwd:.1f}/"
              f"{max(ceiling.forward_ms):.1f} ms (min/median/max), {ceiling.cores} cores -> "
              f"{ceiling.rps:.0f} req/s with nothing else running ==")
        print(f"{'server':<16}{'conc':>5}{'of ceiling':>12}{'forward/CPU per req':>21}")
        for (name, c), runs in results.items():
            if name == "lab" or name.startswith("torch") or c == 1:
                continue
            print(f"{name:<16}{c:>5}{spread(runs, 'rps')[1] / ceiling.rps:>12.2f}"
                  f"{fwd / spread(runs, 'cpu_ms')[1]:>21.2f}")
    print("\n== resident memory after the load (MiB) ==")
    print(f"{'server':<16}{'process':<10}{'pid':>8}{'RSS':>9}{'PSS':>9}")
    for name, rows in mem.items():
        for pid, role, rss, pss in rows:
            print(f"{name:<16}{role:<10}{pid:>8}{rss:>9.0f}{pss:>9.0f}")
        print(f"{name:<16}{'total':<10}{'':>8}{sum(r[2] for r in rows):>9.0f}"
              f"{sum(r[3] for r in rows):>9.0f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default="lab,torch,onnx,onnx-threads1,onnx-reuseport,onnx-1proc",
                   help=f"comma-separated, run in this order; known: {', '.join(VARIANTS)}")
    p.add_argument("--concurrency", default="16,1")
    p.add_argument("--seconds", type=float, default=8.0, help="per run")
    p.add_argument("--repeat", type=int, default=5, help="runs per configuration")
    p.add_argument("--quick", action="store_true", help="2 s per run, 2 runs")
    p.add_argument("--model", type=Path, help="a MobileNetV2 Food-11 state_dict "
                   "(default: random weights, as in the issue's figures)")
    p.add_argument("--baseline", help="the variant the ratios are against "
                   "(default: lab when it runs, else the first)")
    p.add_argument("--against", metavar="REV",
                   help="also serve the onnx defaults from git revision REV (onnx@REV)")
    p.add_argument("--interleave", action="store_true",
                   help="start every server first and take their runs in turn")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.repeat = 2.0, 2
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    if args.baseline and args.baseline not in [*names, f"onnx@{args.against}"]:
        p.error(f"--baseline {args.baseline} is not among --variants")
    if "jemalloc" in names and not JEMALLOC:
        p.error("variant jemalloc: libjemalloc.so.2 not found (apt install libjemalloc2)")
    if not shutil.which("wrk"):
        p.error("wrk not found: apt install wrk (scripts/install-test-deps.sh does)")
    if args.repeat < 1 or args.seconds <= 0:
        p.error("--repeat and --seconds must be positive")
    try:
        concurrency = [int(c) for c in args.concurrency.split(",")]
    except ValueError:
        p.error(f"--concurrency: comma-separated integers, got {args.concurrency!r}")

    tmp = Path(tempfile.mkdtemp(prefix="gg-bench-"))
    body_file, script = wrk_inputs(tmp)
    results: dict = {}
    mem: dict = {}
    variants = {n: VARIANTS[n] for n in names}
    servers: dict = {}  # name -> (Proc, predict URL, worker pids)
    try:
        if args.against:
            try:
                extra = worktree(args.against, tmp)
            except ValueError as e:
                p.error(str(e))
            variants[extra.name] = extra
            names.append(extra.name)
        sd_model, pickle_model = make_models(tmp, args.model)
        ceiling = forward_ceiling(sd_model, args.repeat)
        print(f"forward pass of the served export, one thread, batch 1: median "
              f"{statistics.median(ceiling.forward_ms):.1f} ms; ceiling {ceiling.rps:.0f} req/s "
              f"on {ceiling.cores} cores", flush=True)
        print(f"cores: {os.cpu_count()}; load average {os.getloadavg()[0]:.2f}; model: MobileNetV2 "
              f"Food-11 ({'given weights' if args.model else 'random weights'}); 400x300 JPEG; "
              f"{args.repeat} runs of {args.seconds:g} s per configuration", flush=True)

        def start(name: str) -> None:
            v = variants[name]
            print(f"-- {name}: {v.doc}", flush=True)
            proc, url = start_server(v, tmp, sd_model, pickle_model)
            servers[name] = (proc, url + "/predict",
                             [p for p in process_tree(proc.pid) if p != proc.pid or v.lab])
            wrk_run(servers[name][1], body_file, script, max(concurrency),
                    min(2.0, args.seconds), servers[name][2])

        def run(name: str, c: int) -> None:
            _, predict, workers = servers[name]
            results.setdefault((name, c), []).append(
                r := wrk_run(predict, body_file, script, c, args.seconds, workers))
            print(f"   {name + ' ' if args.interleave else ''}c={c:<3} {r['rps']:7.1f} req/s  "
                  f"p50 {r['p50']:7.1f} ms  p99 {r['p99']:7.1f} ms  CPU {r['cpu_ms']:5.1f} ms/req  "
                  f"errors {r['errors']}  connections per worker "
                  f"{'/'.join(map(str, r['held']))}  load {os.getloadavg()[0]:.2f}", flush=True)

        def stop(name: str) -> None:
            proc = servers.pop(name)[0]
            mem[name] = memory(proc.pid)
            proc.stop()

        if args.interleave:
            for name in names:
                start(name)
            for c in concurrency:
                for _ in range(args.repeat):
                    for name in names:
                        run(name, c)
            for name in names:
                stop(name)
        else:
            for name in names:
                start(name)
                for c in concurrency:
                    for _ in range(args.repeat):
                        run(name, c)
                stop(name)
        # Results in the order of the names, whatever order the runs took.
        results = {(n, c): results[(n, c)] for n in names for c in concurrency}
        print_results(results, mem, names, args.baseline, ceiling)
        if args.json:
            args.json.write_text(json.dumps({
                "forward_ms": ceiling.forward_ms, "ceiling_rps": ceiling.rps,
                "results": [dict(server=k[0], concurrency=k[1], runs=v) for k, v in results.items()],
                "memory": {k: [dict(zip(("pid", "role", "rss_mib", "pss_mib"), r, strict=True))
                               for r in rows] for k, rows in mem.items()},
            }, indent=1))
    finally:
        for proc, _, _ in servers.values():
            proc.stop()
        for v in variants.values():
            if v.tree is not None:
                remove_worktree(v.tree)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
