"""The API's threads carry their names at the OS level, so ``top -H`` and
bench/bench_api.py's per-thread CPU table can tell inference from decoding and drift."""

from __future__ import annotations

import os
import threading
from collections import Counter

import requests

from app_api.thread_names import MAX_BYTES, name_os_thread
from tests.images import photo_bytes


def _os_name_of(target_name: str) -> str:
    """The /proc name of a fresh thread called ``target_name`` after it names itself."""
    seen: dict[str, str] = {}

    def run():
        name_os_thread()
        with open(f"/proc/self/task/{threading.get_native_id()}/comm") as fh:
            seen["comm"] = fh.read().rstrip("\n")

    t = threading.Thread(target=run, name=target_name)
    t.start()
    t.join(10)
    return seen["comm"]


def test_a_thread_gets_its_python_name_at_the_os_level():
    assert _os_name_of("inference_3") == "inference_3"


def test_a_long_name_is_cut_to_what_the_kernel_keeps():
    name = "a-thread-name-well-past-fifteen-bytes"
    assert _os_name_of(name) == name[:MAX_BYTES]


def test_naming_a_thread_leaves_the_process_name_alone():
    before = open("/proc/self/comm").read()
    _os_name_of("decode_0")
    assert open("/proc/self/comm").read() == before


def test_a_serving_worker_names_its_inference_decode_and_drift_threads(demo_model, start_api):
    api = start_api(demo_model, workers=1, extra_args=["--inference-threads", "2"])
    r = requests.post(api.url + "/predict", data=photo_bytes(),
                      headers={"content-type": "image/jpeg"}, timeout=60)
    assert r.status_code == 200
    with open(f"/proc/{api.proc.pid}/task/{api.proc.pid}/children") as fh:
        (worker,) = (int(c) for c in fh.read().split())
    names = Counter()
    for tid in os.listdir(f"/proc/{worker}/task"):
        with open(f"/proc/{worker}/task/{tid}/comm") as fh:
            names[fh.read().rstrip("\n")] += 1
    # Pools start their threads as work arrives: one request starts one of each.
    assert names["inference_0"] == 1 and names["decode_0"] == 1, names
    assert names["drift"] == 1, names
