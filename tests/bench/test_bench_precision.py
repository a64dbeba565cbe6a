"""bench/bench_precision.py's parts, on the lab's MobileNetV2 with few images, so the
measurement behind docs/api.md's "Reduced precision" cannot rot unnoticed."""

from __future__ import annotations

import numpy as np
import torch

from app_api.model import build_mobilenet_v2
from bench import bench_precision


def test_measure_compares_int8_against_the_served_fp32_graph(tmp_path, capsys):
    torch.manual_seed(0)
    model = tmp_path / "mobilenet_v2.pth"
    torch.save(build_mobilenet_v2().eval().state_dict(), model)
    result = bench_precision.measure(model, repeat=2, iterations=2, calibration_n=4, held_n=4)
    assert {"ort-fp32", "ort-int8"} <= set(result)
    fp32, int8 = result["ort-fp32"], result["ort-int8"]
    # The reference against itself is exact; the quantized graph is not.
    assert fp32["agreement"]["max_prob_diff"] == 0.0
    assert fp32["agreement"]["top1_agreement"] == 1.0
    assert int8["agreement"]["max_prob_diff"] > 0.0
    assert int8["agreement"]["max_feature_diff"] > 0.0
    assert int8["agreement"]["images"] == 8
    for r in result.values():
        assert all(len(r["ms"][b]) == 2 and min(r["ms"][b]) > 0 for b in (1, 8))
    bench_precision.print_table("m", result)
    out = capsys.readouterr().out
    assert "ort-int8" in out and "(1.00x)" in out


class _Fixed:
    """A form whose answers depend only on the batch's length."""

    def __init__(self, probs, feats):
        self.probs, self.feats = probs, feats

    def infer(self, x):
        return self.probs[: len(x)], self.feats[: len(x)]


def test_agreement_counts_top1_changes():
    probs = np.eye(4, dtype=np.float32)
    feats = np.ones((4, 3), dtype=np.float32)
    swapped = probs.copy()
    swapped[0] = swapped[1]
    a = bench_precision.agreement(_Fixed(probs, feats), _Fixed(swapped, feats * 1.5),
                                np.zeros((4, 2), dtype=np.uint8))
    assert a["top1_agreement"] == 0.75
    assert a["max_prob_diff"] == 1.0
    assert abs(a["max_feature_diff"] - 0.5) < 1e-6
    assert a["reference_classes"] == 4
