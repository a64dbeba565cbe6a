"""Deploy wall time (fresh host, second run) and the stack's memory after warm-up, on a
fresh local-target container (needs root; about as long as the end-to-end test).

    sudo .venv/bin/python bench/bench_deploy.py [--address 127.0.0.4] [--keep]

Memory is the sum of the proportional set size (Pss) of every process in the container,
so pages that several workers share (torch's libraries) count once; the plain RSS sum
is printed beside it. Target: under 2.5 GiB (the lab's VM has 4 GiB).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gourmetgram import nspawn  # noqa: E402

PER_PROCESS = r"""for p in /proc/[0-9]*; do
  pss=$(awk '/^Pss:/ {print $2}' $p/smaps_rollup 2>/dev/null); [ -n "$pss" ] || continue
  unit=$(sed -n 's#^0::.*/\([^/]*\.service\).*#\1#p' $p/cgroup 2>/dev/null | head -1)
  echo "${unit:-other} $pss $(awk '/^VmRSS:/ {print $2}' $p/status)"
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


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--address", default="127.0.0.4")
    p.add_argument("--keep", action="store_true", help="leave the container running")
    p.add_argument("--requests", type=int, default=50, help="warm-up predictions per variant")
    args = p.parse_args()
    m = nspawn.Machine("bench", args.address)
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
        per_unit: dict[str, list[float]] = {}
        for line in m.ssh(PER_PROCESS).stdout.splitlines():
            unit, pss, rss = line.split()
            acc = per_unit.setdefault(unit, [0.0, 0.0])
            acc[0] += int(pss) / 1024
            acc[1] += int(rss) / 1024
        out["pss_mib_by_unit"] = {u: round(v[0]) for u, v in sorted(per_unit.items())}
        out["total_pss_mib"] = round(sum(v[0] for v in per_unit.values()))
        out["total_rss_sum_mib"] = round(sum(v[1] for v in per_unit.values()))
        out["warm_up_requests_per_variant"] = args.requests
    finally:
        if not args.keep:
            nspawn.purge(m)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
