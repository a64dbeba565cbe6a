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
    n = len(y)
    if n == 0:
        return None
    total = w.sum()
    acc = float((w * y).sum() / total)
    kish = float(total**2 / (w**2).sum())
    variance = (n / (n - 1)) * float(((w * (y - acc)) ** 2).sum()) / total**2 if n > 1 else 0.0
    n_eff = acc * (1 - acc) / variance if 0 < acc < 1 and variance > 0 else kish
    lower, upper = wilson(acc, n_eff, z)
    return Estimate(acc, lower, upper, n, n_eff)


def wilson(p: float, n: float, z: float = Z95) -> tuple[float, float]:
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def estimate_groups(rows: Iterable[tuple[str, str, str, float, int, bool | None]],
                    ) -> dict[tuple[str, str], Estimate]:
    """Per (variant, model version), from ``FeedbackStore.sampled()`` rows."""
    groups: dict[tuple[str, str], list] = {}
    for variant, version, queue, p, labelled, right in rows:
        groups.setdefault((variant, version), []).append((queue, p, labelled, bool(right)))
    out = {}
    for key, items in groups.items():
        queues, probs, labelled, right = (np.array(col) for col in zip(*items, strict=True))
        w = weights(queues, probs, labelled)
        sel = labelled.astype(bool)
        est = estimate(right[sel], w[sel])
        if est is not None:
            out[key] = est
    return out
