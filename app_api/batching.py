"""Adaptive batching of concurrent requests within one worker.

``threads`` inference threads per worker run the model from one queue; requests that
arrive while they are busy queue up and go together in the next forward pass (at most
``max_batch``). At low load a request runs alone at once (no added wait); under load,
batches form by themselves, which is cheaper per image and keeps the runtime from
oversubscribing the cores. Several threads let one process use several cores however
its connections arrive (the runtime releases the GIL while it runs).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from app_api.thread_names import name_os_thread


class Batcher:
    def __init__(
        self,
        infer: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]],
        max_batch: int,
        on_batch: Callable[[int, float], None] | None = None,
        threads: int = 1,
    ):
        self._infer = infer
        self.max_batch = max_batch
        self._on_batch = on_batch
        self._threads = threads
        self._queue: asyncio.Queue | None = None
        self._tasks: list[asyncio.Task] = []
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="inference",
                                            initializer=name_os_thread)

    def start(self) -> None:
        self._queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run()) for _ in range(self._threads)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def submit(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Returns (probabilities, features) of this one image."""
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((image, fut))
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            batch = [(img, fut) for img, fut in batch if not fut.done()]
            if not batch:
                continue
            stacked = np.stack([img for img, _ in batch])
            start = time.perf_counter()
            try:
                probs, feats = await loop.run_in_executor(self._executor, self._infer, stacked)
            except Exception as e:  # noqa: BLE001 - handed to each waiting request
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            if self._on_batch:
                self._on_batch(len(batch), time.perf_counter() - start)
            for i, (_, fut) in enumerate(batch):
                if not fut.done():
                    fut.set_result((probs[i], None if feats is None else feats[i]))
