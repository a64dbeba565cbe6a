"""bench/bench_api.py's ceiling: the served export's forward pass timed as the API opens
it, and each server's req/s reported as a share of what the cores allow."""

from __future__ import annotations

import re

import pytest

from bench import bench_api


@pytest.fixture(scope="module")
def ceiling(tmp_path_factory):
    sd_model, _ = bench_api.make_models(tmp_path_factory.mktemp("models"), None)
    return bench_api.forward_ceiling(sd_model, repeat=3, iterations=2)


def test_ceiling_is_the_cores_over_the_median_forward_pass(ceiling):
    assert len(ceiling.forward_ms) == 3 and min(ceiling.forward_ms) > 0
    fwd = sorted(ceiling.forward_ms)[1]
    assert ceiling.rps == pytest.approx(ceiling.cores * 1000 / fwd)


def test_servers_are_reported_as_shares_of_the_ceiling(ceiling, capsys):
    fwd = sorted(ceiling.forward_ms)[1]

    def runs(rps: float, cpu_ms: float) -> list[dict]:
        return [dict(rps=rps * k, cpu_ms=cpu_ms, p50=10.0, p99=20.0, errors=0, held=[1, 1])
                for k in (0.9, 1.0, 1.1)]

    results = {("lab", 16): runs(10, 100), ("onnx", 16): runs(ceiling.rps / 2, 2 * fwd),
               ("onnx", 1): runs(5, 50)}
    bench_api.print_results(results, {}, ["lab", "onnx"], None, ceiling)
    out = capsys.readouterr().out
    rows = re.findall(r"^(\w+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)$",
                      out.split("against the CPU's ceiling")[1], re.M)
    assert rows == [("onnx", "16", "0.50", "0.50")]  # the lab and c=1 are not rated
