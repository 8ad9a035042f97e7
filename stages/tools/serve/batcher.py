"""One inference worker for all requests: images queue up while a forward pass runs, and the
next pass takes up to ``max_batch`` of them (waiting at most ``max_wait`` seconds for more
when fewer are queued), so one pass serves many requests and throughput grows with load.

The forward pass runs on a single dedicated thread: the event loop keeps accepting and
parsing requests meanwhile, and the model is never called from two threads at once
(Grad-CAM, which hooks the model, is queued on the same thread).
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np


class Batcher:
    def __init__(self, infer: Callable[[np.ndarray], np.ndarray], max_batch: int = 32,
                 max_wait: float = 0.002, max_queue: int = 4096):
        self.infer = infer
        self.max_batch, self.max_wait = max_batch, max_wait
        self.queue: asyncio.Queue = asyncio.Queue(max_queue)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="inference")
        self.batches = self.images = 0          # for /health: how well batching works
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.pool.shutdown(wait=True)

    async def submit(self, image: np.ndarray) -> np.ndarray:
        """Probabilities (C,) for one prepared image (S, S, 3)."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((image, future))
        return await future

    async def run_exclusive(self, fn: Callable, *args):
        """Run ``fn`` on the inference thread (between batches), e.g. Grad-CAM."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def _gather(self) -> list:
        batch = [await self.queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            if not self.queue.empty():
                batch.append(self.queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), left))
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            live = [(image, future) for image, future in batch if not future.done()]  # client gone: skip
            if not live:
                continue
            try:
                probs = await loop.run_in_executor(self.pool, self.infer, np.stack([image for image, _ in live]))
            except Exception as err:   # a failed pass fails its requests, not the worker
                for _, future in live:
                    if not future.done():
                        future.set_exception(err)
                continue
            self.batches += 1
            self.images += len(live)
            for (_, future), row in zip(live, probs):
                if not future.done():
                    future.set_result(row)
