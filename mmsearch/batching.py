"""Micro-batching of concurrent query embeddings for the server.

One short text through MiniLM costs ~40 ms of CPU on a laptop core, sixteen in one call ~7 ms each:
the fixed cost of a model call (Python, kernel launches, tiny matrices) dominates single queries.
Request threads therefore hand their texts/images to one worker thread and wait; the worker takes
everything queued at that moment, embeds it in one model call per modality and hands each caller its
rows. A lone query is not delayed (nothing is waited for); under load, the queries that arrived during
one model call form the next batch. All model calls run on this one thread, so they never compete
with each other for the cores.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from typing import Sequence

import numpy as np
from PIL import Image

from mmsearch.encoders.base import Encoder

log = logging.getLogger(__name__)

_STOP = object()


class BatchingEncoder:
    """An :class:`Encoder` front that merges concurrent ``encode_texts``/``encode_images`` calls."""

    def __init__(self, encoder: Encoder, max_batch: int = 64) -> None:
        self.inner = encoder
        self.max_batch = max_batch
        self._queue: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="mmsearch-embed", daemon=True)
        self._worker.start()

    def __getattr__(self, name: str):  # spec, model_id, dim, device, image_transform, ...
        return getattr(self.inner, name)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._submit("text", list(texts))

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self._submit("image", list(images))

    def encode_image_tensors(self, batch) -> np.ndarray:
        return self.inner.encode_image_tensors(batch)

    def close(self) -> None:
        self._queue.put(_STOP)
        self._worker.join(timeout=30)

    def _submit(self, kind: str, items: list) -> np.ndarray:
        if not items:
            return np.zeros((0, self.inner.dim), dtype=np.float32)
        if not self._worker.is_alive():
            raise RuntimeError("the embedding worker has stopped")
        future: Future = Future()
        self._queue.put((kind, items, future))
        return future.result()

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
            jobs = self._take_batch(first)
            for kind in ("text", "image"):
                self._embed(kind, [j for j in jobs if j[0] == kind])

    def _embed(self, kind: str, jobs: list) -> None:
        if not jobs:
            return
        try:
            encode = self.inner.encode_texts if kind == "text" else self.inner.encode_images
            vectors = encode([item for _, items, _ in jobs for item in items])
        except Exception as exc:  # every caller in the batch gets the error, the worker lives on
            for _, _, future in jobs:
                future.set_exception(exc)
            return
        start = 0
        for _, items, future in jobs:
            future.set_result(vectors[start : start + len(items)])
            start += len(items)
