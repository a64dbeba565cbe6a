"""The end-to-end test's traffic helpers and the dashboard query extraction, on their
own (the e2e itself runs for minutes)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from tests.dashboard_queries import dashboard_queries, grafana_variables, substitute
from tests.deploy.traffic import drift_sums, drifted_images, food_photos, poisson_upper


def _tail(mean: float, k: int) -> float:
    """P(X > k) for X ~ Poisson(mean)."""
    return 1 - sum(math.exp(-mean) * mean**i / math.factorial(i) for i in range(k + 1))


@pytest.mark.parametrize("mean", [0.5, 1.33, 2.0, 10.0])
def test_poisson_upper_is_the_smallest_bound(mean):
    k = poisson_upper(mean)
    assert _tail(mean, k) < 1e-4 <= _tail(mean, k - 1)


def test_poisson_upper_matches_the_thresholds_comment():
    """thresholds.yml: 600 samples at ERT 300 expect 2 alarms, 9 or more is rare."""
    assert poisson_upper(2.0) == 9


def test_food_photos_vary_and_drifted_images_are_not_photos(tmp_path):
    photos = sorted(food_photos(tmp_path / "p", 12).glob("*.jpg"))
    assert len(photos) == 12
    arrays = [np.asarray(Image.open(p)) for p in photos]
    assert all(a.shape == (240, 320, 3) for a in arrays)
    assert len({a.tobytes() for a in arrays}) == 12
    spread = [np.asarray(Image.open(p)).astype(float).std(axis=(0, 1)).max()
              for p in sorted(drifted_images(tmp_path / "d", 6).glob("*.jpg"))]
    assert [s < 2 for s in spread] == [True, False] * 3, spread  # solid, noise, ...
    assert all(s > 40 for s in spread[1::2]), spread  # uniform: 74 before JPEG smooths it


def test_drift_sums_add_every_series():
    text = """# HELP drift_events_total x
drift_events_total{variant="canary",model_version="v1"} 3.0
drift_events_total{variant="canary",model_version="v2"} 2.0
drift_events_created{variant="canary",model_version="v1"} 1.7e9
drift_samples_total{variant="canary",model_version="v1"} 100.0
drift_samples_dropped_total{variant="canary",model_version="v1"} 7.0
"""
    assert drift_sums(text) == (5.0, 100.0)


def test_queries_of_rows_targets_and_annotations_with_variables():
    dash = {
        "panels": [{"title": "Row", "panels": [
            {"title": "Inner", "targets": [{"refId": "A", "expr": "rate(x[$__rate_interval])"}]}]},
            {"title": "Range", "targets": [{"refId": "B", "expr": "increase(y[$__range])"},
                                          {"refId": "C"}]}],
        "annotations": {"list": [{"name": "Marks", "expr": "z"}, {"name": "builtin"}]},
    }
    assert dashboard_queries("d", dash, grafana_variables("10m")) == [
        ("d:Inner:A", "rate(x[1m])"), ("d:Range:B", "increase(y[10m])"), ("d:annotation:Marks", "z")]


def test_an_unknown_variable_is_an_error():
    with pytest.raises(ValueError, match=r"\$variant"):
        substitute('up{variant=~"$variant"}', grafana_variables())
