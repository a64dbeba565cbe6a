"""What a bootstrapped drift reference detects: the demo model's features of N
in-distribution "dishes" (tests/app_api/drift_data.py) become the reference exactly as
an API instance bootstraps it (drift.build_reference, defaults ERT 300, window 10), then
fresh dishes (false alarms) and shifted dishes (detection delay) are fed to the online
detector; and the same with the first N predictions already drifted (the blind case).

    PYTHONPATH=. .venv/bin/python bench/bench_drift_bootstrap.py [--n 200] [--seeds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app_api import drift  # noqa: E402
from app_api.demo_model import build_demo_model  # noqa: E402
from app_api.model import load_model  # noqa: E402
from tests.app_api.drift_data import SHIFTS, dish  # noqa: E402
from tests.app_api.drift_data import features as features_of  # noqa: E402


def delay(det: drift.OnlineMMD, feats: np.ndarray) -> int | None:
    """Samples until the first alarm after a restart, or None."""
    det.reset()
    for i, x in enumerate(feats):
        if det.update(x)[2]:
            return i + 1
    return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200, help="bootstrap samples (FOOD11 default 200)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--null", type=int, default=1500, help="fresh dishes for false alarms")
    args = ap.parse_args()
    path = Path("/tmp/gourmetgram-bench-demo-model.pt")
    if not path.exists():
        build_demo_model(path)
    model = load_model(path, device="cpu")
    start = time.perf_counter()
    null = features_of(model, [dish(500_000 + i) for i in range(args.null)])
    shifted = {k: features_of(model, [f(dish(600_000 + i)) for i in range(40)])
               for k, f in SHIFTS.items()}
    print(f"features: {time.perf_counter() - start:.0f}s")
    for seed in range(args.seeds):
        boot = features_of(model, [dish(seed * 10_000 + i) for i in range(args.n)])
        t = time.perf_counter()
        ref = drift.build_reference(boot, model_sha256="0" * 64, seed=seed)
        built = time.perf_counter() - t
        det = drift.OnlineMMD(ref, seed=seed)
        alarms = 0
        det.reset()
        for x in null:
            alarms += det.update(x)[2]
        delays = {k: delay(det, f) for k, f in shifted.items()}
        print(f"seed {seed}: built in {built:.1f}s; {alarms} false alarms in {len(null)} fresh "
              f"dishes (ERT 300 expects {len(null) / 300:.1f}); detection delay (samples, of "
              f"40): {delays}")
    # Blind case: the first N predictions already noise; then more noise is "normal".
    noisy = features_of(model, [SHIFTS["noise"](dish(700_000 + i)) for i in range(args.n)])
    ref = drift.build_reference(noisy, model_sha256="0" * 64)
    det = drift.OnlineMMD(ref, seed=0)
    more = features_of(model, [SHIFTS["noise"](dish(800_000 + i)) for i in range(300)])
    det.reset()
    blind = sum(det.update(x)[2] for x in more)
    back = delay(det, null[:40])
    print(f"reference bootstrapped from drifted traffic (noise): {blind} alarms in 300 more "
          f"noise samples (ERT expects 1.0); return to dishes detected after {back} samples")
    print(f"total {time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
