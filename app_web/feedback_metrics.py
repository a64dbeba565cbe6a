"""Feedback metrics, read from the store at scrape time (the store is shared by all
workers, and by all web hosts on PostgreSQL, so every scrape sees the same totals):
counts by verdict and queue, labels, and the estimated online accuracy with its
95 % interval per variant and model version (``app_web.accuracy``)."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from app_web.accuracy import estimate_groups
from app_web.feedback_store import FeedbackStore

log = logging.getLogger("app_web.feedback")
LABELS = ("variant", "model_version")


class FeedbackCollector:
    def __init__(self, store: FeedbackStore):
        self.store = store

    def collect(self):
        up = GaugeMetricFamily("feedback_store_up", "1 when the feedback store answered this scrape.")
        try:
            counts = self.store.counts()
            labelled = self.store.labelled_counts()
            estimates = estimate_groups(self.store.sampled_sums())
        except Exception as e:  # a scrape must answer even when the database does not
            log.warning("feedback store unreadable for metrics: %s", e)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        verdicts = CounterMetricFamily(
            "feedback", "Answers people gave on predictions, by kind (right or wrong).",
            labels=(*LABELS, "kind"))
        kept = CounterMetricFamily(
            "feedback_kept", "Photos kept, by review queue (flagged, confirmed, random, "
            "low_confidence).", labels=(*LABELS, "queue"))
        by_kind: dict[tuple, int] = {}
        by_queue: dict[tuple, int] = {}
        for variant, version, kind, queue, n in counts:
            if kind != "none":
                by_kind[(variant, version, kind)] = by_kind.get((variant, version, kind), 0) + n
            by_queue[(variant, version, queue)] = by_queue.get((variant, version, queue), 0) + n
        for key, n in sorted(by_kind.items()):
            verdicts.add_metric(key, n)
        for key, n in sorted(by_queue.items()):
            kept.add_metric(key, n)
        lab = CounterMetricFamily("feedback_labelled", "Kept photos the operator labelled, by queue.",
                                  labels=(*LABELS, "queue"))
        for variant, version, queue, n in sorted(labelled):
            lab.add_metric((variant, version, queue), n)
        acc = GaugeMetricFamily("feedback_accuracy", "Estimated online accuracy (share of right "
                                "predictions), weighted for how labelled photos were sampled.",
                                labels=LABELS)
        lower = GaugeMetricFamily("feedback_accuracy_lower", "Lower end of the 95% interval of "
                                  "feedback_accuracy.", labels=LABELS)
        upper = GaugeMetricFamily("feedback_accuracy_upper", "Upper end of the 95% interval of "
                                  "feedback_accuracy.", labels=LABELS)
        n_labels = GaugeMetricFamily("feedback_accuracy_labels", "Labelled sampled photos behind "
                                     "feedback_accuracy.", labels=LABELS)
        for key, e in sorted(estimates.items()):
            acc.add_metric(key, e.accuracy)
            lower.add_metric(key, e.lower)
            upper.add_metric(key, e.upper)
            n_labels.add_metric(key, e.labels)
        yield from (verdicts, kept, lab, acc, lower, upper, n_labels)


def render(store: FeedbackStore) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FeedbackCollector(store))
    return generate_latest(registry)
