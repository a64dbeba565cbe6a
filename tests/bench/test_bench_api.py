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
        by_thread = dict.fromkeys(bench_api.THREAD_ROLES, 0.0) | {"inference": cpu_ms}
        return [dict(rps=rps * k, cpu_ms=cpu_ms, cpu_ms_by_thread=by_thread, p50=10.0,
                     p99=20.0, errors=0, held=[1, 1]) for k in (0.9, 1.0, 1.1)]

    results = {("lab", 16): runs(10, 100), ("onnx", 16): runs(ceiling.rps / 2, 2 * fwd),
               ("onnx", 1): runs(5, 50)}
    bench_api.print_results(results, {}, ["lab", "onnx"], None, ceiling)
    out = capsys.readouterr().out
    rows = re.findall(r"^(\w+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)$",
                      out.split("against the CPU's ceiling")[1], re.M)
    assert rows == [("onnx", "16", "0.50", "0.50")]  # the lab and c=1 are not rated
    table = out.split("CPU per request by thread")[1].split("against the CPU's ceiling")[0]
    lab = re.search(r"^lab\s+16\s+(.*)$", table, re.M).group(1).split()
    assert [float(x) for x in lab] == [0, 0, 100, 0, 0, 100]  # by role, then the total


def test_thread_cpu_counts_each_named_thread_under_its_role():
    """A thread named as the API's inference pool names its threads, kept busy for a
    while, shows up under "inference" and not under the event loop (this main thread).
    The thread is read while it is parked, not after it ends: Linux drops an exited
    thread from /proc/<pid>/task, so its CPU would not be counted."""
    import os
    import threading
    import time

    from app_api.thread_names import name_os_thread

    spun, release = threading.Event(), threading.Event()

    def spin():
        name_os_thread()
        end = time.thread_time() + 0.3
        while time.thread_time() < end:
            pass
        spun.set()
        release.wait(30)

    before = bench_api.thread_cpu([os.getpid()])
    t = threading.Thread(target=spin, name="inference_7", daemon=True)
    t.start()
    try:
        assert spun.wait(30)
        during = bench_api.thread_cpu([os.getpid()])
    finally:
        release.set()
        t.join(30)
    during.subtract(before)
    assert during["inference"] >= 0.2, during
    assert during["event loop"] < 0.2, during
    assert set(during) <= set(bench_api.THREAD_ROLES)


def test_cpu_of_a_thread_that_ended_is_counted_as_other():
    """The lab's pool threads come and go: one that spun and ended during the measured
    span is no longer in /proc/<pid>/task, yet its CPU must show (under "other"), never
    as a negative share."""
    import os
    import threading
    import time

    def spin():
        end = time.thread_time() + 0.3
        while time.thread_time() < end:
            pass

    pids = [os.getpid()]
    before = bench_api.cpu_snapshot(pids)
    t = threading.Thread(target=spin, name="pool_worker", daemon=True)
    t.start()
    t.join(30)
    total, roles = bench_api.cpu_since(pids, before)
    assert total >= 0.25, total
    assert roles["other"] >= 0.25, roles
    assert min(roles[r] for r in bench_api.THREAD_ROLES) >= 0, roles


def test_against_serves_the_defaults_from_a_worktree_of_the_revision(tmp_path):
    """--against REV: the onnx defaults from a checkout of REV, which is removed after."""
    import subprocess

    import pytest

    v = bench_api.worktree("HEAD", tmp_path)
    try:
        assert v.name == "onnx@HEAD"
        assert v.args == bench_api.VARIANTS["onnx"].args
        assert (v.tree / "app_api" / "main.py").is_file()
        head = subprocess.run(["git", "-C", str(v.tree), "rev-parse", "HEAD"],
                              capture_output=True, text=True, check=True).stdout
        assert head == subprocess.run(["git", "-C", str(bench_api.ROOT), "rev-parse", "HEAD"],
                                      capture_output=True, text=True, check=True).stdout
    finally:
        bench_api.remove_worktree(v.tree)
    assert not v.tree.exists()
    listed = subprocess.run(["git", "-C", str(bench_api.ROOT), "worktree", "list"],
                            capture_output=True, text=True, check=True).stdout
    assert str(v.tree) not in listed
    with pytest.raises(ValueError, match="not a revision"):
        bench_api.worktree("no-such-revision-here", tmp_path)
