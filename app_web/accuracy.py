"""Online accuracy from the operator's labels, without the bias of how the labelled
photos were picked.

Photos reach the review queues by chance with known probabilities: every prediction
with ``random_rate``, and a low-confidence one also with ``low_confidence_rate``
(first phase); the operator then labels some of each queue, in the queue's random
order (second phase). A labelled item stands for ``1 / (p * r)`` predictions, ``p``
its first-phase inclusion probability and ``r`` the labelled share of its queue.
The estimate is the Hajek (self-normalised Horvitz-Thompson) weighted mean of
"the prediction was right"; its variance is the linearisation (with-replacement)
estimate, turned into an effective sample size for a Wilson interval, which stays
inside [0, 1] and behaves near 100 % accuracy. Flagged and confirmed photos (the
person chose to answer) are not a probability sample and are left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    accuracy: float
    lower: float
    upper: float
    labels: int
    effective_n: float


def inclusion_probability(confidence: float, random_rate: float, low_confidence_rate: float,
                          low_confidence_below: float) -> float:
    """Chance that a prediction reaches a sampled review queue (the two draws are
    independent): 1 - (1 - r)(1 - l) for a low-confidence one, r otherwise."""
    low = low_confidence_rate if confidence < low_confidence_below else 0.0
    return 1.0 - (1.0 - random_rate) * (1.0 - low)


def weights(queues: np.ndarray, probabilities: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """Weight of each item (0 for the unlabelled): 1 / (p * labelled share of its queue)."""
    queues = np.asarray(queues)
    probabilities = np.asarray(probabilities, dtype=float)
    labelled = np.asarray(labelled, dtype=bool)
    w = np.zeros(len(queues))
    for q in np.unique(queues):
        in_q = queues == q
        share = labelled[in_q].sum() / in_q.sum()
        if share > 0:
            sel = in_q & labelled
            w[sel] = 1.0 / (probabilities[sel] * share)
    return w


def estimate(correct: np.ndarray, w: np.ndarray, z: float = Z95) -> Estimate | None:
    """Weighted accuracy and its interval from the labelled items; None without any."""
    y = np.asarray(correct, dtype=float)
    w = np.asarray(w, dtype=float)
    return from_sums(len(y), w.sum(), (w * y).sum(), (w * w).sum(), (w * w * y).sum(), z)


def from_sums(n: int, sw: float, swy: float, sw2: float, sw2y: float,
              z: float = Z95) -> Estimate | None:
    """The same from the sums the database adds up (labels are 0/1, so y^2 = y):
    n labels, sum w, sum w*y, sum w^2, sum w^2*y."""
    if n == 0 or sw <= 0:
        return None
    acc = float(swy / sw)
    kish = float(sw**2 / sw2)
    spread = sw2y * (1 - 2 * acc) + acc**2 * sw2  # sum of w^2 (y - acc)^2
    variance = (n / (n - 1)) * max(0.0, float(spread)) / sw**2 if n > 1 else 0.0
    n_eff = acc * (1 - acc) / variance if 0 < acc < 1 and variance > 0 else kish
    lower, upper = wilson(acc, n_eff, z)
    return Estimate(acc, lower, upper, int(n), float(n_eff))


def wilson(p: float, n: float, z: float = Z95) -> tuple[float, float]:
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def estimate_groups(rows: Iterable[tuple], z: float = Z95) -> dict[tuple[str, str], Estimate]:
    """Per (variant, model version), from ``FeedbackStore.sampled_sums()`` rows: per queue
    the kept and labelled counts and, over the labelled, sum 1/p, sum y/p, sum 1/p^2,
    sum y/p^2; a queue's labelled share s scales them by 1/s and 1/s^2."""
    groups: dict[tuple[str, str], list[float]] = {}
    for variant, version, _queue, kept, labelled, s1, sy, s2, sy2 in rows:
        if not labelled:
            continue
        share = labelled / kept
        g = groups.setdefault((variant, version), [0, 0.0, 0.0, 0.0, 0.0])
        g[0] += labelled
        g[1] += s1 / share
        g[2] += sy / share
        g[3] += s2 / share**2
        g[4] += sy2 / share**2
    out = {}
    for key, (n, sw, swy, sw2, sw2y) in groups.items():
        est = from_sums(n, sw, swy, sw2, sw2y, z)
        if est is not None:
            out[key] = est
    return out
