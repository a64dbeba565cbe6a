"""Online drift detection on the model's penultimate-layer features.

A kernel-MMD change detector in the spirit of Cobb et al., "Sequential multivariate
change detection with calibrated and memoryless false detection rates" (AISTATS 2022),
the method behind alibi-detect's ``MMDDriftOnline``, written here with numpy:

* The reference features (from the user's own training images) are split once, at
  random, into a *reference set* R, which the statistic compares against, and a
  *held-out calibration pool* H, which is only used to simulate streams. Everything
  fitted (projection, kernel bandwidth) is fitted on R alone.
* The statistic at each step is the unbiased MMD^2 between R and a sliding window of
  the latest W test features, with a Gaussian kernel whose bandwidth is the median
  pairwise distance in R (median heuristic). Each new sample costs O(|R| d): its
  kernel row against R and against the W-1 other window members; the R-R term is a
  constant computed once.
* Thresholds: the operator asks for an expected run time (ERT, in samples) between
  false alarms. A memoryless (geometric) run time with that mean needs the alarm
  probability at every step, given no alarm so far, to be 1/ERT. The thresholds are
  calibrated so, by simulation: many streams drawn without replacement from H (never
  from R, so the calibration sees the statistic exactly as it behaves on new data
  against this very R) give the statistic at steps 1..T after a (re)start; the
  threshold of step t is the 1-1/ERT quantile among the streams still alive at t
  (as in the paper). Overlapping windows make the conditional law settle after about
  W steps, so steps W+1..T share one threshold, chosen by bisection so the pooled
  conditional alarm rate over those steps is 1/ERT (about 2W times more simulated
  steps behind it than a single quantile). That threshold serves every later step.
* After an alarm the detector restarts (window refilled with W-1 held-out samples),
  so alarms form a renewal process: under no drift, the mean number of samples
  between alarms is the ERT; under drift, alarms repeat every few samples.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT = "gourmetgram-drift-reference"
FORMAT_VERSION = 1
PROJECTIONS = ("pca", "random", "none")
DEFAULT_ERT = 300
DEFAULT_WINDOW = 10
DEFAULT_PROJECTION = "pca"
DEFAULT_DIM = 32
DEFAULT_STREAMS = 20000
MIN_REFERENCE = 40


class DriftReferenceError(Exception):
    """A reference that cannot be used; the message says what to do."""


# ---------------------------------------------------------------- kernel, projection


def sq_dists(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    return np.maximum(d, 0.0)


def median_sigma(x: np.ndarray) -> float:
    """Median heuristic: the median distance between distinct reference points."""
    d = sq_dists(x, x)[np.triu_indices(len(x), 1)]
    med = float(np.sqrt(np.median(d)))
    if not math.isfinite(med) or med <= 0:
        raise DriftReferenceError(
            "the reference features are all identical: the images give the model no variation"
        )
    return med


def kernel(x: np.ndarray, y: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(sq_dists(x, y) * (-0.5 / (sigma * sigma)))


def fit_projection(ref: np.ndarray, kind: str, dim: int, rng: np.random.Generator):
    """(mean, matrix): features are reduced as ``(x - mean) @ matrix``."""
    d = ref.shape[1]
    mean = ref.mean(0)
    if kind == "none" or dim >= d:
        return mean, np.eye(d)
    if kind == "random":
        return mean, rng.standard_normal((d, dim)) / math.sqrt(dim)
    if kind == "pca":
        _, _, vt = np.linalg.svd(ref - mean, full_matrices=False)
        return mean, vt[:dim].T.copy()
    raise DriftReferenceError(f"unknown projection {kind!r}; one of {', '.join(PROJECTIONS)}")


# ---------------------------------------------------------------- calibration


def _window_stats(k_hh, kxy_h, kxx, idx, window, steps):
    """MMD^2 of windows 1..steps of the streams ``idx`` (B, W-1+steps) over H."""
    w = window
    out = np.empty((idx.shape[0], steps))
    kyy = k_hh[idx[:, :, None], idx[:, None, :]]
    kxy = kxy_h[idx]
    for t in range(steps):
        s = slice(t, t + w)
        off = kyy[:, s, s].sum((1, 2)) - w
        out[:, t] = off / (w * (w - 1)) - 2.0 * kxy[:, s].mean(1) + kxx
    return out


def simulate_null_stats(ref, held, sigma, window, steps, n_streams, rng, chunk=2000):
    """Statistic at steps 1..``steps`` after a restart, for ``n_streams`` streams drawn
    without replacement from the held-out pool (the first W-1 fill the window)."""
    length = window - 1 + steps
    if len(held) < length:
        raise DriftReferenceError(
            f"the held-out part of the reference has {len(held)} samples; a window of "
            f"{window} needs at least {length}: give more reference images"
        )
    k_hh = kernel(held, held, sigma)
    kxy_h = kernel(held, ref, sigma).mean(1)
    kxx = mmd_const(ref, sigma)
    stats = np.empty((n_streams, steps))
    for a in range(0, n_streams, chunk):
        b = min(n_streams, a + chunk)
        idx = np.argsort(rng.random((b - a, len(held))), axis=1)[:, :length]
        stats[a:b] = _window_stats(k_hh, kxy_h, kxx, idx, window, steps)
    return stats


def mmd_const(ref: np.ndarray, sigma: float) -> float:
    k = kernel(ref, ref, sigma)
    n = len(ref)
    return float((k.sum() - np.trace(k)) / (n * (n - 1)))


def thresholds_from_stats(stats: np.ndarray, ert: float, window: int) -> np.ndarray:
    """Per-step thresholds for steps 1..W, then one pooled threshold for W+1..T."""
    p = 1.0 / ert
    n, steps = stats.shape
    alive = np.ones(n, dtype=bool)
    thr = []
    for t in range(min(window, steps)):
        s = stats[alive, t]
        thr.append(float(np.quantile(s, 1.0 - p)))
        alive &= stats[:, t] <= thr[-1]
    if steps > window:
        tail = stats[alive, window:]
        if len(tail) < 20:
            raise DriftReferenceError(
                f"only {len(tail)} of {n} simulated streams get past the first window "
                "without an alarm: raise the ERT or the number of streams"
            )

        def rate(h):
            ok = np.cumprod(tail <= h, axis=1)
            at_risk = np.concatenate([np.ones((len(tail), 1)), ok[:, :-1]], axis=1)
            return float((at_risk * (tail > h)).sum() / at_risk.sum())

        lo, hi = float(tail.min()), float(tail.max())
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if rate(mid) > p:
                lo = mid
            else:
                hi = mid
        thr.append(hi)
    return np.asarray(thr)


# ---------------------------------------------------------------- the reference file


@dataclass
class DriftReference:
    """Everything the detector needs, and everything needed to rebuild it."""

    features: np.ndarray  # (N, D) raw penultimate features of the reference images
    ref_idx: np.ndarray  # rows forming R
    cal_idx: np.ndarray  # rows forming H (held out for calibration)
    proj_mean: np.ndarray
    proj_matrix: np.ndarray
    sigma: float
    thresholds: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def ert(self) -> float:
        return float(self.meta["ert"])

    @property
    def window(self) -> int:
        return int(self.meta["window"])

    @property
    def model_sha256(self) -> str:
        return str(self.meta["model_sha256"])

    @property
    def stationary_threshold(self) -> float:
        return float(self.thresholds[-1])

    def project(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64) - self.proj_mean
        return x if self.meta.get("projection") == "none" else x @ self.proj_matrix

    def save(self, path: Path) -> None:
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            features=self.features.astype(np.float32),
            ref_idx=self.ref_idx,
            cal_idx=self.cal_idx,
            proj_mean=self.proj_mean,
            proj_matrix=self.proj_matrix,
            thresholds=self.thresholds,
            meta=np.array(json.dumps({**self.meta, "sigma": self.sigma}, sort_keys=True)),
        )
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(buf.getvalue())
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> DriftReference:
        """Reads and checks a file written by ``save`` (never unpickles anything)."""
        path = Path(path)
        if not path.is_file():
            raise DriftReferenceError(f"drift reference {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            meta = json.loads(str(arrays.pop("meta")))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as e:
            raise DriftReferenceError(
                f"drift reference {path} is not a readable reference file, truncated or "
                f"corrupt ({e}); rebuild it with gourmetgram build-drift-reference"
            ) from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise DriftReferenceError(f"drift reference {path}: not a {FORMAT} file")
        if meta.get("format_version") != FORMAT_VERSION:
            raise DriftReferenceError(
                f"drift reference {path}: format version {meta.get('format_version')!r}, "
                f"this version reads {FORMAT_VERSION}; rebuild it"
            )
        need = ("features", "ref_idx", "cal_idx", "proj_mean", "proj_matrix", "thresholds")
        missing = [k for k in need if k not in arrays]
        keys = ("ert", "window", "model_sha256", "sigma", "seed")
        missing += [k for k in keys if k not in meta]
        if missing:
            raise DriftReferenceError(f"drift reference {path}: missing {', '.join(missing)}")
        try:
            ref = cls(
                features=arrays["features"].astype(np.float64),
                ref_idx=arrays["ref_idx"].astype(np.int64),
                cal_idx=arrays["cal_idx"].astype(np.int64),
                proj_mean=arrays["proj_mean"].astype(np.float64),
                proj_matrix=arrays["proj_matrix"].astype(np.float64),
                sigma=float(meta.pop("sigma")),
                thresholds=arrays["thresholds"].astype(np.float64),
                meta=meta,
            )
            ref.check()
        except (TypeError, ValueError, IndexError) as e:
            raise DriftReferenceError(f"drift reference {path}: inconsistent contents ({e})") from None
        return ref

    def check(self) -> None:
        f = self.features
        if f.ndim != 2 or len(f) < MIN_REFERENCE:
            raise ValueError(f"features of shape {f.shape}")
        n, d = f.shape
        for name, idx in (("ref_idx", self.ref_idx), ("cal_idx", self.cal_idx)):
            if idx.ndim != 1 or len(idx) < 2 or idx.min() < 0 or idx.max() >= n:
                raise ValueError(f"{name} does not index the features")
        if self.proj_mean.shape != (d,) or self.proj_matrix.ndim != 2 or self.proj_matrix.shape[0] != d:
            raise ValueError("projection does not fit the features")
        if not (self.ert > 1 and self.window >= 2 and len(self.thresholds) >= 1):
            raise ValueError("bad ert, window or thresholds")
        for name, a in (("features", f), ("thresholds", self.thresholds),
                        ("projection", self.proj_matrix)):
            if not np.isfinite(a).all():
                raise ValueError(f"{name} hold NaN or infinite values")
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError("bad kernel bandwidth")

    def check_model(self, sha256: str, feature_dim: int | None, where: str = "") -> None:
        """Refuses a reference built for another model."""
        if sha256 != self.model_sha256:
            raise DriftReferenceError(
                f"drift reference {where} was built for model sha256 {self.model_sha256[:12]}"
                f" ({self.meta.get('model_version', '?')}), but this API serves sha256 "
                f"{sha256[:12]}: rebuild it for this model with gourmetgram "
                "build-drift-reference --model ..."
            )
        if feature_dim is None:
            raise DriftReferenceError("this model gives no penultimate features; drift needs them")
        if feature_dim != self.features.shape[1]:
            raise DriftReferenceError(
                f"drift reference {where} has {self.features.shape[1]}-d features, the model gives "
                f"{feature_dim}-d"
            )


def load_for_model(path: Path, sha256: str, feature_dim: int | None) -> DriftReference:
    ref = DriftReference.load(path)
    ref.check_model(sha256, feature_dim, str(path))
    return ref


def build_reference(
    features: np.ndarray,
    *,
    model_sha256: str,
    model_version: str = "",
    ert: float = DEFAULT_ERT,
    window: int = DEFAULT_WINDOW,
    projection: str = DEFAULT_PROJECTION,
    dim: int = DEFAULT_DIM,
    seed: int = 0,
    n_streams: int = DEFAULT_STREAMS,
    ref_fraction: float = 0.5,
    extra_meta: dict | None = None,
) -> DriftReference:
    """Splits, fits R, calibrates on H. Same inputs and seed give the same reference."""
    # Stored as float32: rounded first, so the file's features rebuild it exactly.
    features = np.asarray(features, dtype=np.float32).astype(np.float64)
    if features.ndim != 2 or len(features) < MIN_REFERENCE:
        raise DriftReferenceError(
            f"a reference needs at least {MIN_REFERENCE} samples, got {len(features)}"
        )
    if not np.isfinite(features).all():
        raise DriftReferenceError("the reference features hold NaN or infinite values")
    if ert <= 1 or window < 2:
        raise DriftReferenceError("ert must be > 1 and window >= 2")
    if n_streams < 20 * ert:
        raise DriftReferenceError(
            f"{n_streams} calibration streams are too few for ERT {ert:g}: each threshold "
            f"needs about 20 simulated alarms, so at least {int(20 * ert)} streams"
        )
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(features))
    n_ref = int(round(len(features) * ref_fraction))
    ref_idx, cal_idx = np.sort(perm[:n_ref]), np.sort(perm[n_ref:])
    mean, matrix = fit_projection(features[ref_idx], projection, dim, rng)
    r = (features[ref_idx] - mean) @ matrix
    h = (features[cal_idx] - mean) @ matrix
    sigma = median_sigma(r)
    steps = 3 * window
    stats = simulate_null_stats(r, h, sigma, window, steps, n_streams, rng)
    thresholds = thresholds_from_stats(stats, ert, window)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_sha256": model_sha256,
        "model_version": model_version,
        "ert": float(ert),
        "window": int(window),
        "projection": projection,
        "dim": int(matrix.shape[1]),
        "seed": int(seed),
        "n_streams": int(n_streams),
        "ref_fraction": float(ref_fraction),
        "calibration_steps": steps,
        **(extra_meta or {}),
    }
    return DriftReference(
        features=features, ref_idx=ref_idx, cal_idx=cal_idx, proj_mean=mean,
        proj_matrix=matrix, sigma=sigma, thresholds=thresholds, meta=meta,
    )


# ---------------------------------------------------------------- the online detector


class OnlineMMD:
    """The sequential test. ``update(x)`` costs one kernel row against R (O(|R| d))
    and one against the window (O(W d)); nothing is recomputed from scratch."""

    def __init__(self, reference: DriftReference, seed: int | None = None):
        self.reference = reference
        self.w = reference.window
        self.thresholds = reference.thresholds
        self.r = reference.project(reference.features[reference.ref_idx])
        self.h = reference.project(reference.features[reference.cal_idx])
        self.sigma = reference.sigma
        self._gamma = -0.5 / (self.sigma * self.sigma)
        self._r_sq = (self.r * self.r).sum(1)
        self.kxx = mmd_const(self.r, self.sigma)
        self.rng = np.random.default_rng(seed)
        self.kyy = np.zeros((self.w, self.w))
        self.kxy = np.zeros(self.w)
        self.y = np.zeros((self.w, self.r.shape[1]))
        self.t = 0
        self._next = 0
        self.reset()

    def reset(self) -> None:
        """Restart: window refilled with W-1 held-out samples, step count 0."""
        fill = self.h[self.rng.choice(len(self.h), self.w - 1, replace=False)]
        self.y[: self.w - 1] = fill
        self.y[self.w - 1] = 0.0
        self.kyy[:] = kernel(self.y, self.y, self.sigma)
        self.kxy[: self.w - 1] = kernel(fill, self.r, self.sigma).mean(1)
        self._next = self.w - 1
        self.t = 0

    def _row_r(self, y: np.ndarray) -> float:
        d = self._r_sq + float(y @ y) - 2.0 * (self.r @ y)
        return float(np.exp(np.maximum(d, 0.0) * self._gamma).mean())

    def update(self, x: np.ndarray) -> tuple[float, float, bool]:
        """Feeds one raw feature vector; returns (statistic, threshold, alarm)."""
        y = self.reference.project(x)
        slot = self._next
        self.y[slot] = y
        d = ((self.y - y) ** 2).sum(1)
        row = np.exp(d * self._gamma)
        self.kyy[slot, :] = row
        self.kyy[:, slot] = row
        self.kxy[slot] = self._row_r(y)
        self._next = (slot + 1) % self.w
        self.t += 1
        w = self.w
        stat = (self.kyy.sum() - np.trace(self.kyy)) / (w * (w - 1)) - 2.0 * self.kxy.mean() + self.kxx
        thr = float(self.thresholds[min(self.t, len(self.thresholds)) - 1])
        alarm = stat > thr
        if alarm:
            self.reset()
        return float(stat), thr, bool(alarm)
