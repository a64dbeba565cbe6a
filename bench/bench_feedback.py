"""What feedback costs: the pending write added to every prediction, the durable
(fsynced) write behind each acknowledged answer, and a metrics scrape as the store
grows. In-process, on this machine's disk, the real FeedbackService and store.

    PYTHONPATH=. .venv/bin/python bench/bench_feedback.py                # SQLite
    PYTHONPATH=. .venv/bin/python bench/bench_feedback.py --db-url postgresql://...
    PYTHONPATH=. .venv/bin/python bench/bench_feedback.py --quick

Several runs each; min / median / max of the per-run medians (and p95 of the durable
write), so one noisy run shows as spread, not as the answer.
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from app_web import feedback_metrics
from app_web.api_client import Prediction
from app_web.feedback import FeedbackService
from app_web.feedback_store import Row
from app_web.settings import WebSettings


def photo(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).resize((640, 480))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def prediction() -> Prediction:
    return Prediction("Soup", random.random(), "v1", "production", prediction_id=uuid.uuid4().hex)


def spread(values: list[float]) -> str:
    return f"min {min(values):.2f}  median {statistics.median(values):.2f}  max {max(values):.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db-url", default="", help="'' = SQLite in a temp folder")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--n", type=int, default=300, help="operations per run")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    runs, n = (1, 30) if args.quick else (args.runs, args.n)
    sizes = (1000,) if args.quick else (1000, 10_000, 100_000)
    photos = [photo(i) for i in range(20)]
    print(f"photo {len(photos[0]) / 1000:.0f} kB JPEG; store {args.db_url or 'SQLite'}; "
          f"{runs} runs x {n}")

    record_ms, verdict_p50, verdict_p95 = [], [], []
    for run in range(runs):
        with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:  # on the repo's disk, not tmpfs
            s = WebSettings(feedback_dir=Path(tmp), feedback_db_url=args.db_url,
                            pending_keep=2000)
            svc = FeedbackService(s)
            for i in range(2000):  # a full pending folder: prune scans all of it
                svc.record(prediction(), photos[i % 20], "JPEG")
            pids, times = [], []
            for i in range(n):
                p = prediction()
                t = time.perf_counter()
                svc.record(p, photos[i % 20], "JPEG")
                times.append(time.perf_counter() - t)
                pids.append(p.prediction_id)
            record_ms.append(1000 * statistics.median(times))
            times = []
            for i, pid in enumerate(pids):
                t = time.perf_counter()
                svc.verdict(pid, "wrong", "Rice" if i % 2 else "Egg")
                times.append(time.perf_counter() - t)
            times.sort()
            verdict_p50.append(1000 * times[len(times) // 2])
            verdict_p95.append(1000 * times[int(len(times) * 0.95)])
            print(f"  run {run + 1}: record {record_ms[-1]:.2f} ms, durable answer p50 "
                  f"{verdict_p50[-1]:.2f} ms p95 {verdict_p95[-1]:.2f} ms", file=sys.stderr)
    print(f"pending write per prediction (ms, median per run): {spread(record_ms)}")
    print(f"durable answer, p50 (ms):                          {spread(verdict_p50)}")
    print(f"durable answer, p95 (ms):                          {spread(verdict_p95)}")

    for size in sizes:
        with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
            svc = FeedbackService(WebSettings(feedback_dir=Path(tmp), feedback_db_url=args.db_url))
            rng = random.Random(size)
            with svc.store._tx() as cur:
                for i in range(size):
                    queue = "random" if i % 3 else "low_confidence"
                    r = Row(id=uuid.uuid4().hex, variant=("production", "canary")[i % 2],
                            model_version="v1", predicted="Soup", confidence=rng.random(),
                            predicted_at=float(i), photo_sha256="a" * 64, photo_ext="jpg",
                            queue=queue, sampling_probability=0.05 if queue == "random" else 0.3,
                            review_key=rng.random(),
                            label=("Soup" if rng.random() < 0.8 else "Rice") if i % 4 else None)
                    cur.execute(f"INSERT INTO predictions ({', '.join(Row.__dataclass_fields__)}) "
                                f"VALUES ({', '.join('?' * len(Row.__dataclass_fields__))})",
                                [getattr(r, c) for c in Row.__dataclass_fields__])
            times = []
            for _ in range(max(3, runs)):
                t = time.perf_counter()
                feedback_metrics.render(svc.store)
                times.append(1000 * (time.perf_counter() - t))
            print(f"metrics scrape, {size:>7,} sampled rows (ms):      {spread(times)}")
            svc.store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
