"""Micro-batching of concurrent server work: query embeddings, and whole text searches.

One short text through the text tower costs several times its share of a batch of sixteen: the fixed
cost of a call (Python, dispatch, tiny matrices) dominates single queries, and an exact vector search
reads every stored vector once per call whether it carries one query or sixteen. Request threads
therefore hand their work to one worker thread and wait; the worker takes everything queued at that
moment, runs it as one call per group (texts/images, or one search target) and hands each caller its
rows. A lone query is not delayed (nothing is waited for); under load, the queries that arrived during
one call form the next batch. All calls of one batcher run on its one worker thread, so they never
compete with each other for the cores. A text search is two batchers in a row (``chained``): the text
tower's, then the vector search's, so the two stages overlap on different cores.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from typing import Callable, Hashable, Sequence

import numpy as np
from PIL import Image

from mmsearch.encoders.base import Encoder
from mmsearch.metrics import timed_embedding

log = logging.getLogger(__name__)

_STOP = object()


class MicroBatcher:
    """Merges concurrent ``submit(group, items)`` calls into one ``handler(group, all_items)`` call per group.

    ``handler`` returns one result per item (a list or an array); each caller gets the slice for its own
    items. An exception in ``handler`` reaches every caller of that batch; the worker lives on."""

    def __init__(self, handler: Callable[[Hashable, list], Sequence], max_batch: int = 64, name: str = "mmsearch-batch") -> None:
        self.handler = handler
        self.max_batch = max_batch
        self._queue: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._run, name=name, daemon=True)
        self._worker.start()

    def submit(self, group: Hashable, items: list):
        return self.submit_nowait(group, items).result()

    def submit_nowait(self, group: Hashable, items: list) -> Future:
        """Queue the items and return at once: an async caller awaits the future without holding a thread."""
        if not self._worker.is_alive():
            raise RuntimeError("the batching worker has stopped")
        future: Future = Future()
        self._queue.put((group, items, future))
        return future

    def close(self) -> None:
        self._queue.put(_STOP)
        self._worker.join(timeout=30)

    def _take_batch(self, first) -> list:
        jobs, size = [first], len(first[1])
        while size < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                self._queue.put(_STOP)  # finish this batch, then stop
                break
            jobs.append(job)
            size += len(job[1])
        return jobs

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            # A caller that gave up (an async request whose client left cancels its future) is dropped
            # here; once running, a future can no longer be cancelled, so setting its result is safe.
            jobs = [job for job in self._take_batch(first) if job[2].set_running_or_notify_cancel()]
            for group in dict.fromkeys(job[0] for job in jobs):  # first-come order of groups
                self._handle(group, [job for job in jobs if job[0] == group])

    def _handle(self, group: Hashable, jobs: list) -> None:
        try:
            results = self.handler(group, [item for _, items, _ in jobs for item in items])
        except Exception as exc:  # every caller in the batch gets the error, the worker lives on
            for _, _, future in jobs:
                future.set_exception(exc)
            return
        start = 0
        for _, items, future in jobs:
            future.set_result(results[start : start + len(items)])
            start += len(items)


def chained(first: Future, then: Callable[[object], Future]) -> Future:
    """A future for ``then(first's result)``: the second stage is queued by the first's completion
    callback, on the thread that finished it, so no thread sits waiting between two workers and each
    stage's worker is free for its next batch at once (a pipeline: the query tower embeds batch n+1
    while the vector search runs batch n). An error of either stage reaches the result; a result
    cancelled before the second stage is queued skips that stage."""
    result: Future = Future()

    def fail(exc: BaseException) -> None:
        if result.set_running_or_notify_cancel():
            result.set_exception(exc)

    def finish(second: Future) -> None:
        if second.cancelled():
            result.cancel()
        elif second.exception() is not None:
            fail(second.exception())
        elif result.set_running_or_notify_cancel():
            result.set_result(second.result())

    def start(done: Future) -> None:
        if result.cancelled():
            return
        if done.cancelled():
            result.cancel()
            return
        if done.exception() is not None:
            fail(done.exception())
            return
        try:
            second = then(done.result())
        except Exception as exc:  # the second stage refused the work (e.g. its worker has stopped)
            fail(exc)
            return
        second.add_done_callback(finish)

    first.add_done_callback(start)
    return result


class BatchingEncoder:
    """An :class:`Encoder` front that merges concurrent ``encode_texts``/``encode_images`` calls."""

    def __init__(self, encoder: Encoder, max_batch: int = 64) -> None:
        self.inner = encoder
        self._batcher = MicroBatcher(self._encode, max_batch, name="mmsearch-embed")

    def __getattr__(self, name: str):  # spec, model_id, dim, device, image_transform, ...
        return getattr(self.inner, name)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._submit("text", list(texts))

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self._submit("image", list(images))

    def encode_image_tensors(self, batch) -> np.ndarray:
        return self.inner.encode_image_tensors(batch)

    def close(self) -> None:
        self._batcher.close()

    def _submit(self, kind: str, items: list) -> np.ndarray:
        if not items:
            return np.zeros((0, self.inner.dim), dtype=np.float32)
        return self._batcher.submit(kind, items)

    def _encode(self, kind: str, items: list) -> np.ndarray:
        with timed_embedding(kind, len(items)):
            return self.inner.encode_texts(items) if kind == "text" else self.inner.encode_images(items)
