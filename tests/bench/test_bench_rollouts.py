"""The scorecard benchmark's parts (bench/bench_rollouts.py, tests/canary_faults.py): the
bad canaries are what they claim to be, and one small scorecard on the real stack rolls
the bad ones back and promotes the good one, so the bench cannot rot unnoticed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app_api.classes import FOOD11_CLASSES
from app_api.model import load_model
from bench.bench_rollouts import ERRORS_ONE_IN, KINDS, photo_pool, run_scorecard, table
from gourmetgram.canary.rollout import PROMOTE, ROLLBACK
from tests import canary_faults
from tests.images import b64


@pytest.fixture(scope="module")
def pool_arrays(demo_model):
    return canary_faults.model_inputs(load_model(demo_model, device="cpu"), photo_pool())


def test_swapped_channels_model_is_the_demo_model_on_bgr_images(demo_model, tmp_path, pool_arrays):
    demo = load_model(demo_model, device="cpu")
    bgr = load_model(canary_faults.swapped_channels_model(demo_model, tmp_path / "bgr.pt"),
                     device="cpu")
    assert bgr.info.preprocessing == demo.info.preprocessing
    want, _ = demo.infer(np.ascontiguousarray(pool_arrays[..., ::-1]))
    got, _ = bgr.infer(pool_arrays)
    np.testing.assert_allclose(got, want, atol=1e-4)
    same, _ = demo.infer(pool_arrays)
    assert np.abs(got - same).max() > 0.05  # and it is not the demo model on RGB


def test_class_shift_model_moves_a_share_of_answers_to_one_class(demo_model, tmp_path, pool_arrays):
    demo = load_model(demo_model, device="cpu")
    shifted = load_model(canary_faults.class_shift_model(demo_model, tmp_path / "shift.pt",
                                                         photo_pool(), share=0.25), device="cpu")
    dessert = FOOD11_CLASSES.index("Dessert")
    before = (demo.infer(pool_arrays)[0].argmax(1) == dessert).mean()
    after = (shifted.infer(pool_arrays)[0].argmax(1) == dessert).mean()
    assert before < 0.1 and abs(after - 0.25) <= 0.05, (before, after)


def test_errors_fault_fails_a_fixed_share_of_the_pool():
    bodies = [json.dumps({"image": b64(b)}).encode() for b in photo_pool()]
    picked = [canary_faults.fails_on(b, ERRORS_ONE_IN) for b in bodies]
    assert picked == [canary_faults.fails_on(b, ERRORS_ONE_IN) for b in bodies]  # fixed
    assert 2 <= sum(picked) <= 20, sum(picked)  # 48 inputs, about 8 expected


@pytest.mark.slow
def test_small_scorecard_rolls_back_bad_canaries_and_promotes_a_good_one(tmp_path):
    """One rollout each on the real stack: a good canary, a hanging one and one answering
    HTTP 500 on some inputs (the fault inside the real app)."""
    runs = run_scorecard(tmp_path, [("good", 1), ("hang", 1), ("errors", 1)], interval=4,
                         window=8, clients=3, max_steps=15)
    by = {r.kind: r for r in runs}
    show = "\n".join(f"{r.kind}: {r.outcome}, failed {r.failures}, sent again {r.retried}\n  "
                     + "\n  ".join(r.decisions) for r in runs)
    assert by["good"].outcome == PROMOTE and by["good"].failed == 0, show
    assert by["hang"].outcome == ROLLBACK, show
    assert by["hang"].seconds <= 3 * 4 and by["hang"].failed == 0, show
    assert by["errors"].outcome == ROLLBACK and "error_rate" in by["errors"].failed_checks, show
    assert by["errors"].failed > 0  # its 500s reached users: Nginx does not retry a 500
    assert by["errors"].failures == {"HTTP 500": by["errors"].failed}, show
    text = table(runs)
    assert all(f"| {k} | 1 |" in text for k in ("good", "hang", "errors")), text
    assert "false rollbacks 0/1" in text and set(by) <= set(KINDS)
