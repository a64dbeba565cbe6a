"""The deployed stack on a fresh local-target container (needs root, about 10 minutes):
deploy wall time (fresh host, second run), throughput through the public Nginx port
against the production API's own port, and memory per process after that load.

    sudo .venv/bin/python bench/bench_deploy.py [--address 127.0.0.4] [--repeat 5] [--keep]

Throughput: wrk (bench/bench_api.py's closed loop, the lab's JSON form, a 400x300 JPEG)
at concurrency 16 and 1, on ``/api/predict`` through Nginx (canary weight 0, so every
request is production's) and on the production API's own port, alternating run by run
so that drift on a shared machine hits both alike; min/median/max of each and the
ratio of the medians (target: Nginx at least 80 % of the API's own throughput).

Memory is the proportional set size (Pss) of every process in the container, so pages
that several workers share count once, with each process's RSS beside it, per unit
and per process, after the load. Grafana is counted when it is installed; where its
APT repository is unreachable (as on this workplace's machines) the report says so.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_api import spread, wrk_inputs, wrk_run  # noqa: E402

from gourmetgram.deploy import nspawn  # noqa: E402

PER_PROCESS = r"""for p in /proc/[0-9]*; do
  pss=$(awk '/^Pss:/ {print $2}' $p/smaps_rollup 2>/dev/null); [ -n "$pss" ] || continue
  unit=$(sed -n 's#^0::.*/\([^/]*\.service\).*#\1#p' $p/cgroup 2>/dev/null | head -1)
  echo "${unit:-other} $pss $(awk '/^VmRSS:/ {print $2}' $p/status) ${p#/proc/} $(cat $p/comm)"
done"""


def deploy(name: str) -> float:
    start = time.monotonic()
    env = dict(os.environ, GOURMETGRAM_LOCAL_NAME=name, PYTHONPATH=str(REPO))
    res = subprocess.run([str(Path(sys.executable).with_name("pyinfra")), "-y", "inventory.py", "deploy.py"],
                         cwd=REPO, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(res.stdout[-4000:] + res.stderr[-2000:])
    return time.monotonic() - start


def jpeg() -> str:
    from PIL import Image

    im = Image.new("RGB", (320, 240), (200, 120, 40))
    buf = io.BytesIO()
    im.save(buf, "JPEG")
    return base64.b64encode(buf.getvalue()).decode()


def throughput(direct: str, nginx: str, repeat: int, seconds: float, body: Path,
               script: Path) -> dict:
    """wrk on both paths, alternating; every run's figures and the medians' ratio."""
    out: dict = {}
    for url in (direct, nginx):
        wrk_run(url, body, script, 16, 2.0, [])
    for c in (16, 1):
        runs: dict[str, list[dict]] = {"api": [], "nginx": []}
        for _ in range(repeat):
            for path, url in (("api", direct), ("nginx", nginx)):
                r = wrk_run(url, body, script, c, seconds, [])
                runs[path].append({k: r[k] for k in ("rps", "p50", "p99", "errors")})
                print(f"   c={c:<3} {path:<6}{r['rps']:7.1f} req/s  p50 {r['p50']:6.1f} ms  p99 "
                      f"{r['p99']:6.1f} ms  errors {r['errors']}", flush=True)
        out[f"c{c}"] = {
            path: {"rps_min_median_max": [round(v, 1) for v in spread(rs, "rps")],
                   "p50_ms_min_median_max": [round(v, 1) for v in spread(rs, "p50")],
                   "errors": sum(r["errors"] for r in rs)}
            for path, rs in runs.items()
        }
        out[f"c{c}"]["nginx_over_api"] = round(spread(runs["nginx"], "rps")[1]
                                               / spread(runs["api"], "rps")[1], 3)
    return out


def memory(m: nspawn.Machine) -> dict:
    per_unit: dict[str, list[float]] = {}
    processes = []
    for line in m.ssh(PER_PROCESS).stdout.splitlines():
        unit, pss, rss, pid, comm = (line.split(maxsplit=4) + [""])[:5]
        acc = per_unit.setdefault(unit, [0.0, 0.0])
        acc[0] += int(pss) / 1024
        acc[1] += int(rss) / 1024
        processes.append({"unit": unit, "pid": int(pid), "comm": comm,
                          "pss_mib": round(int(pss) / 1024), "rss_mib": round(int(rss) / 1024)})
    grafana = m.ssh("dpkg-query -W -f '${Status}' grafana-server grafana 2>/dev/null", check=False)
    return {
        "pss_rss_mib_by_unit": {u: [round(v[0]), round(v[1])] for u, v in sorted(per_unit.items())},
        "processes_over_10_mib": sorted((p for p in processes if p["rss_mib"] > 10),
                                        key=lambda p: -p["pss_mib"]),
        "total_pss_mib": round(sum(v[0] for v in per_unit.values())),
        "total_rss_sum_mib": round(sum(v[1] for v in per_unit.values())),
        "grafana_installed": "install ok installed" in grafana.stdout,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--address", default="127.0.0.4")
    p.add_argument("--keep", action="store_true", help="leave the container running")
    p.add_argument("--requests", type=int, default=50, help="warm-up predictions per variant")
    p.add_argument("--repeat", type=int, default=5, help="wrk runs per path and concurrency")
    p.add_argument("--seconds", type=float, default=8.0, help="per wrk run")
    args = p.parse_args()
    if args.repeat < 1 or args.seconds <= 0 or args.requests < 0:
        p.error("--repeat and --seconds must be positive, --requests at least 0")
    m = nspawn.Machine("bench", nspawn.check_address(args.address))
    nspawn.purge(m)
    out: dict = {}
    try:
        nspawn.up(m.name, m.address)
        out["fresh_deploy_s"] = round(deploy(m.name), 1)
        out["second_run_s"] = round(deploy(m.name), 1)
        stack = json.loads(m.ssh("cat /etc/gourmetgram/stack.json").stdout)
        image = jpeg()
        for port in stack["api_ports"].values():
            for _ in range(args.requests):
                requests.post(f"http://{args.address}:{port}/predict", json={"image": image},
                              timeout=60).raise_for_status()
        out["warm_up_requests_per_variant"] = args.requests
        public = f"http://{args.address}:{stack['nginx_port']}/api/predict"
        direct = f"http://{args.address}:{stack['api_ports']['production']}/predict"
        print(f"-- throughput: {public} against {direct}", flush=True)
        with tempfile.TemporaryDirectory(prefix="gg-bench-deploy-") as tmp:
            out["throughput"] = throughput(direct, public, args.repeat, args.seconds,
                                           *wrk_inputs(Path(tmp)))
        out["memory_after_load"] = memory(m)
    finally:
        if not args.keep:
            nspawn.purge(m)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
