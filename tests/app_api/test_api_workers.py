"""How connections reach the workers: with ``FOOD11_REUSE_PORT`` each gunicorn worker
has its own listening socket (SO_REUSEPORT) and the kernel spreads new connections over
them, so keep-alive connections cannot all pile onto one worker; with several
inference threads one worker runs batches on several cores."""

from __future__ import annotations

import http.client
import re
import subprocess
from collections import Counter

import requests

from tests.images import photo_bytes


def _owners(port: int, state: str) -> Counter:
    out = subprocess.run(["ss", "-tnpH", "state", state, f"( sport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    return Counter(int(p) for p in re.findall(r"pid=(\d+)", out))


def _workers(api) -> set[int]:
    pid = api.proc.pid
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return {int(c) for c in fh.read().split()}


def test_reuse_port_gives_each_worker_its_own_socket_and_spreads_connections(demo_model, start_api):
    api = start_api(demo_model, workers=2, env={"FOOD11_REUSE_PORT": "1"})
    workers = _workers(api)
    assert len(workers) == 2
    listening = _owners(api.port, "listening")
    assert set(listening) == workers and all(n == 1 for n in listening.values()), listening
    # 24 keep-alive connections: the chance that all land on one worker is 2 / 2**24.
    conns = [http.client.HTTPConnection("127.0.0.1", api.port, timeout=60) for _ in range(24)]
    try:
        for c in conns:
            c.request("GET", "/healthz")
            assert c.getresponse().read()
        held = _owners(api.port, "established")
        assert set(held) == workers and sum(held.values()) == 24, held
    finally:
        for c in conns:
            c.close()
    r = requests.post(api.url + "/predict", data=photo_bytes(),
                      headers={"content-type": "image/jpeg"}, timeout=60)
    assert r.status_code == 200


def test_one_worker_with_two_inference_threads_answers_concurrent_requests(demo_model, start_api):
    from concurrent.futures import ThreadPoolExecutor

    api = start_api(demo_model, workers=1, extra_args=["--inference-threads", "2"])
    body = photo_bytes()

    def post(_):
        return requests.post(api.url + "/predict", data=body,
                             headers={"content-type": "image/jpeg"}, timeout=120).json()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, range(24)))
    assert {a["prediction"] for a in answers} == {answers[0]["prediction"]}
    assert len({a["prediction_id"] for a in answers}) == 24


def test_batcher_runs_batches_on_all_its_threads_at_once():
    """Each batch waits at a barrier for a second batch in flight: only two inference
    threads running at the same time get past it (one thread would time out)."""
    import asyncio
    import threading

    import numpy as np

    from app_api.batching import Batcher

    barrier = threading.Barrier(2, timeout=10)

    def infer(images):
        barrier.wait()
        return np.ones((len(images), 3)) / 3, None

    async def run():
        batcher = Batcher(infer, max_batch=1, threads=2)
        batcher.start()
        try:
            img = np.zeros((4, 4, 3), np.uint8)
            return await asyncio.gather(batcher.submit(img), batcher.submit(img))
        finally:
            await batcher.stop()

    results = asyncio.run(run())
    assert [r[0].shape for r in results] == [(3,), (3,)]
