"""Does drift detection slow /predict? Runs the real API (gunicorn + uvicorn workers)
with drift off and on, alternating, and compares p50 latency and throughput at
concurrency 1 and 16; also times one detector update per feature reduction.

    PYTHONPATH=. .venv/bin/python bench/bench_drift.py            # full (a few minutes)
    PYTHONPATH=. .venv/bin/python bench/bench_drift.py --quick    # check that it runs

Run it on a quiet machine: other load moves the figures more than drift does.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# One BLAS thread, as in the API workers (serve-api sets OMP_NUM_THREADS likewise).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import requests  # noqa: E402
from PIL import Image, ImageFilter  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def picture(seed: int, size=(512, 384)) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    im = Image.fromarray(small, "RGB").resize(size, Image.Resampling.BICUBIC)
    return im.filter(ImageFilter.GaussianBlur(2))


def jpeg_b64(im: Image.Image) -> str:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return base64.b64encode(buf.getvalue()).decode()


def build_reference(model_path: Path, out: Path, n: int) -> None:
    from app_api import drift
    from app_api.model import load_model
    from app_api.preprocess import prepare

    model = load_model(model_path, device="cpu")
    pp = model.info.preprocessing
    feats = []
    for i in range(0, n, 16):
        x = np.stack([prepare(picture(s), pp) for s in range(i, min(n, i + 16))])
        feats.append(model.infer(x)[1])
    drift.build_reference(
        np.concatenate(feats), model_sha256=model.info.sha256, model_version=model.info.version
    ).save(out)


class Server:
    def __init__(self, model: Path, workers: int, tmp: Path, reference: Path | None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "gourmetgram", "serve-api", "--port", str(self.port),
                "--model", str(model), "--workers", str(workers), "--device", "cpu",
                "--metrics-dir", str(tmp / f"m{self.port}"), "--variant", "bench"]
        if reference:
            argv += ["--drift-reference", str(reference)]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.log = open(tmp / f"api-{self.port}.log", "wb")
        self.p = subprocess.Popen(argv, env=env, cwd=REPO, stdout=self.log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                raise SystemExit(f"server exited: see {self.log.name}")
            try:
                if requests.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise SystemExit("server not ready after 120 s")

    def drift_counts(self) -> dict[str, float]:
        from prometheus_client.parser import text_string_to_metric_families

        out: dict[str, float] = {}
        text = requests.get(self.url + "/metrics", timeout=10).text
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name in ("drift_samples_total", "drift_samples_dropped_total",
                              "drift_events_total"):
                    out[s.name] = out.get(s.name, 0) + s.value
        return out

    def stop(self) -> None:
        try:
            os.killpg(self.p.pid, signal.SIGTERM)
            self.p.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()
        self.log.close()


def load(url: str, body: str, concurrency: int, seconds: float) -> tuple[float, float]:
    """(p50 ms, requests/s) of POST /predict from ``concurrency`` looping clients."""
    lat: list[float] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds
    payload = json.dumps({"image": body})

    def client():
        s = requests.Session()
        mine = []
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            r = s.post(url + "/predict", data=payload,
                       headers={"content-type": "application/json"}, timeout=60)
            r.raise_for_status()
            mine.append(time.perf_counter() - t)
        with lock:
            lat.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return 1000 * statistics.median(lat), len(lat) / (time.perf_counter() - started)


def detector_costs(repeat: int) -> dict[str, float]:
    """Microseconds per OnlineMMD.update on 1280-d features, per reduction."""
    from app_api import drift

    rng = np.random.default_rng(0)
    base = np.maximum(rng.standard_normal((1000, 1280)) * np.linspace(2, 0.1, 1280), 0)
    xs = np.maximum(rng.standard_normal((repeat, 1280)) * np.linspace(2, 0.1, 1280), 0)
    out = {}
    for name, kw in {"pca-32": {"projection": "pca", "dim": 32},
                     "random-32": {"projection": "random", "dim": 32},
                     "none-1280": {"projection": "none"}}.items():
        ref = drift.build_reference(base, model_sha256="x", n_streams=2000, ert=50, **kw)
        det = drift.OnlineMMD(ref, seed=0)
        t = time.perf_counter()
        for x in xs:
            det.update(x)
        out[name] = 1e6 * (time.perf_counter() - t) / repeat
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one short round (checks it runs)")
    ap.add_argument("--model", help="model file (default: the demo model, built if needed)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20.0, help="per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="off/on alternations")
    ap.add_argument("--concurrency", default="1,16")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.rounds = 3.0, 1
    levels = [int(c) for c in args.concurrency.split(",")]

    from app_api.settings import DEFAULT_DEMO_MODEL

    model = Path(args.model) if args.model else DEFAULT_DEMO_MODEL
    if not model.exists():
        from app_api.demo_model import build_demo_model

        build_demo_model(model)
    print("detector update cost (us):", {k: round(v, 1) for k, v in
                                         detector_costs(200 if args.quick else 3000).items()})
    body = jpeg_b64(picture(10_000))
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ref = tmp / "ref.npz"
        build_reference(model, ref, 100 if args.quick else 400)
        for r in range(args.rounds):
            for mode in ("off", "on"):
                server = Server(model, args.workers, tmp, ref if mode == "on" else None)
                try:
                    load(server.url, body, max(levels), 1.0 if args.quick else 5.0)  # warm
                    for c in levels:
                        results.setdefault((mode, c), []).append(
                            load(server.url, body, c, args.seconds))
                    if mode == "on":
                        print(f"round {r + 1}: drift counters {server.drift_counts()}")
                finally:
                    server.stop()
    print(f"\nworkers {args.workers}, {args.rounds} round(s) x {args.seconds:g} s, median of rounds")
    print("concurrency  p50 off ms  p50 on ms  p50 on/off  req/s off  req/s on  req/s on/off")
    for c in levels:
        off = results[("off", c)]
        on = results[("on", c)]
        p_off = statistics.median(x[0] for x in off)
        p_on = statistics.median(x[0] for x in on)
        t_off = statistics.median(x[1] for x in off)
        t_on = statistics.median(x[1] for x in on)
        print(f"{c:>11}  {p_off:>10.1f}  {p_on:>9.1f}  {p_on / p_off:>10.3f}  "
              f"{t_off:>9.1f}  {t_on:>8.1f}  {t_on / t_off:>12.3f}")


if __name__ == "__main__":
    main()
