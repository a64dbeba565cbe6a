"""The weighted accuracy estimator by simulation: streams of predictions whose
correctness depends on confidence (so the low-confidence queue, sampled ten times
more often, is much less accurate than the traffic), sampled into the review queues
as the web app does, and partly labelled in queue order. Over 1000 streams per
variant the 95 % intervals must cover the stream's true accuracy in 93-97 % of
runs (the binomial spread at 1000 runs is 0.7 points); the unweighted share of
right answers, for contrast, is biased by about 18 points and almost never covers."""

from __future__ import annotations

import numpy as np
import pytest

from app_web.accuracy import estimate, estimate_groups, inclusion_probability, weights

RUNS = 1000


def one_stream(rng, shift: float, weighted: bool, n=4000, random_rate=0.03, low_rate=0.3,
               below=0.5, labelled_share=0.7):
    confidence = rng.beta(4, 2, n)
    right = rng.random(n) < np.clip(confidence + shift, 0, 1)
    in_random = rng.random(n) < random_rate
    in_low = (confidence < below) & (rng.random(n) < low_rate)
    kept = in_random | in_low
    queues = np.where(in_low, "low_confidence", "random")[kept]
    p = np.array([inclusion_probability(c, random_rate, low_rate, below) for c in confidence[kept]])
    labelled = np.zeros(kept.sum(), bool)
    for q in ("random", "low_confidence"):  # the operator labels the first 70 % of each queue
        idx = np.flatnonzero(queues == q)
        rng.shuffle(idx)
        labelled[idx[: round(labelled_share * len(idx))]] = True
    w = weights(queues, p, labelled)[labelled] if weighted else np.ones(labelled.sum())
    e = estimate(right[kept][labelled], w)
    truth = right.mean()
    return e.lower <= truth <= e.upper, e.accuracy - truth


@pytest.mark.parametrize(("variant", "shift"), [("production", 0.1), ("canary", -0.15)])
def test_intervals_cover_the_truth_about_95_percent(variant, shift):
    rng = np.random.default_rng(17 if variant == "production" else 18)
    results = [one_stream(rng, shift, weighted=True) for _ in range(RUNS)]
    coverage = np.mean([c for c, _ in results])
    bias = np.mean([b for _, b in results])
    assert 0.93 <= coverage <= 0.97, coverage
    assert abs(bias) < 0.005, bias


def test_unweighted_share_is_biased():
    rng = np.random.default_rng(3)
    results = [one_stream(rng, 0.0, weighted=False) for _ in range(200)]
    assert np.mean([c for c, _ in results]) < 0.05
    assert np.mean([b for _, b in results]) < -0.1


def test_weights_and_edge_cases():
    w = weights(np.array(["random", "random", "low_confidence"]), np.array([0.1, 0.1, 0.5]),
                np.array([True, False, True]))
    assert w.tolist() == pytest.approx([20.0, 0.0, 2.0])
    assert estimate(np.array([], bool), np.array([])) is None
    e = estimate(np.ones(50, bool), np.ones(50))
    assert e.accuracy == 1.0 and e.upper == 1.0 and 0.9 < e.lower < 0.95  # Wilson at n=50
    assert inclusion_probability(0.9, 0.1, 0.5, 0.5) == pytest.approx(0.1)
    assert inclusion_probability(0.2, 0.1, 0.5, 0.5) == pytest.approx(0.55)


def test_sums_from_the_database_give_the_same_estimate():
    """estimate_groups (what a scrape computes from SQL sums) equals the array version."""
    rng = np.random.default_rng(9)
    n = 500
    queues = rng.choice(["random", "low_confidence"], n)
    p = np.where(queues == "random", 0.05, rng.choice([0.3, 0.335], n))
    labelled = rng.random(n) < np.where(queues == "random", 0.9, 0.4)
    right = rng.random(n) < 0.7
    w = weights(queues, p, labelled)
    direct = estimate(right[labelled], w[labelled])
    rows = []
    for q in ("random", "low_confidence"):
        sel = queues == q
        lab = sel & labelled
        y = right[lab]
        rows.append(("production", "v1", q, int(sel.sum()), int(lab.sum()), (1 / p[lab]).sum(),
                     (y / p[lab]).sum(), (1 / p[lab] ** 2).sum(), (y / p[lab] ** 2).sum()))
    summed = estimate_groups(rows)[("production", "v1")]
    assert summed.labels == direct.labels
    for field in ("accuracy", "lower", "upper", "effective_n"):
        assert getattr(summed, field) == pytest.approx(getattr(direct, field), rel=1e-9)
