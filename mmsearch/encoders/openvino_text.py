"""The text tower (+ joint head) compiled by OpenVINO: the fast CPU path for search queries.

Why: a query is about ten tokens, and through torch eager MiniLM's six layers cost mostly per-op
overhead (Python dispatch, and autocast re-casting every weight matrix at every call). Compiled, the
same graph answers a lone query ~2.4x faster and a batch of 16 ~1.6x faster (measured side by side on
the 2-core machine), which is what bounds a server's text-query latency and throughput.

Choice (``MMSEARCH_TEXT_BACKEND``): ``torch``; ``openvino`` (an error if the package is missing);
``auto`` = OpenVINO on CPU for the default model when the package is installed, else torch. As for
images (``mmsearch.encoders.openvino_tower``, whose graph cache this shares), a compiled graph is used
only after it matches torch fp32 on probe texts at load time (cosine per text >= PROBE_MIN_COSINE;
the fp32 reference is kept beside the cached graph, so later loads do not run the torch tower for it).
The graph takes token ids of any batch size and length: the caller trims all-padding columns first,
exactly as the torch path does.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from mmsearch.encoders.openvino_common import (
    BACKENDS, OV_PRECISION, cache_key, cache_root, cached_reference, compile_cached, cosines, openvino_available, record_sizes,
    resolve_backend,
)
from mmsearch.errors import TextBackendError

if TYPE_CHECKING:  # annotations only: importing torch is what a one-shot query avoids
    import torch

log = logging.getLogger(__name__)

TEXT_BACKENDS = BACKENDS  # the same choice for both towers
PROBE_MIN_COSINE = 0.99
PROBE_TEXTS = (
    "a red leather handbag", "dog", "a slice of pizza with extra cheese on a wooden table",
    "blue running shoes", "an old steam locomotive crossing a bridge in the snow", "SKU-0042",
)
GRAPH_FORMAT = 1  # part of the cache key


def resolve_text_backend(requested: str, spec: str, device: str, model: torch.nn.Module | None = None) -> str:
    """'auto' -> 'openvino' for the default model on CPU when OpenVINO is installed, else 'torch'."""
    backend = resolve_backend("text", requested, spec, device, openvino_available(), TextBackendError)
    if backend == "openvino" and model is not None and not _has_text_graph(model):
        if requested == "openvino":
            raise TextBackendError("MMSEARCH_TEXT_BACKEND=openvino supports mmsearch-lite's text tower only")
        return "torch"  # auto: a model whose text tower has no compilable graph keeps torch
    return backend


def _has_text_graph(model) -> bool:
    return hasattr(model, "join_text") and hasattr(getattr(model, "text", None), "config")


def trim_padding(tokens, pad_id: int) -> np.ndarray:
    """Token ids (a numpy array or a CPU torch tensor) -> int64 numpy ids without the trailing columns in
    which every row is padding (the torch model trims the same way, ``lite.trim_padding``)."""
    ids = np.asarray(tokens, dtype=np.int64)
    if ids.ndim != 2 or ids.shape[1] == 0:
        return ids
    used = np.flatnonzero((ids != pad_id).any(axis=0))
    return ids[:, : int(used.max()) + 1] if len(used) else ids[:, :1]


def _text_graph(model):
    """``model``'s trimmed token ids [n, t] -> joint text embedding [n, dim] (not normalised; the caller does
    that), as one traceable module. Built on demand: only converting a graph needs torch."""
    import torch

    class TextGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.model.join_text(self.model.text(tokens))

    return TextGraph()


def graph_key(model_id: str) -> str:
    return cache_key(["text", GRAPH_FORMAT, model_id])


def _convert(model, tokens: np.ndarray) -> list[tuple[object, bool]]:
    import openvino as ov
    import torch

    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter, not user news
        example = torch.from_numpy(np.ascontiguousarray(tokens))
        graph = ov.convert_model(_text_graph(model).eval(), example_input=example, input=[ov.PartialShape([-1, -1])])
    return [(graph, True)]


class OpenVinoTextTower:
    """Compiled text graph: token ids (padded like the tokenizer returns them) -> float32 [n, dim]."""

    def __init__(self, compiled, pad_id: int, *, precision: str, threads: int, cache_hit: bool) -> None:
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()  # one infer request, shared by the server's threads one at a time
        self.pad_id = pad_id
        self.precision, self.threads, self.cache_hit = precision, threads, cache_hit

    def __call__(self, tokens) -> np.ndarray:
        ids = trim_padding(tokens, self.pad_id)
        with self._lock:
            return np.array(self._request.infer({0: ids})[0], dtype=np.float32)

    def describe(self) -> str:
        return f"openvino {self.precision}, {self.threads} thread(s), graph {'cached' if self.cache_hit else 'converted'}"


def torch_text_reference(model) -> Callable[[np.ndarray], np.ndarray]:
    """probe token ids -> ``model``'s fp32 text embeddings (the reference a compiled graph must match)."""

    def reference(tokens) -> np.ndarray:
        import torch

        ids = torch.from_numpy(trim_padding(tokens, model.text.config.pad_token_id))
        with torch.inference_mode():
            return model.join_text(model.text(ids)).float().numpy()

    return reference


def token_ids(tokenizer, texts) -> np.ndarray:
    """texts -> int64 numpy token ids, from MiniLM's own tokenizer without torch (``ids``) or from any
    tokenizer returning a tensor (open_clip's)."""
    ids = getattr(tokenizer, "ids", None)
    return ids(list(texts)) if ids is not None else np.asarray(tokenizer(list(texts)), dtype=np.int64)


def text_graph_dir(model_id: str) -> Path:
    """Where the converted text graph of a model (and its probe reference) is cached."""
    return cache_root() / graph_key(model_id)


def build_openvino_text_tower(
    model, tokenizer, *, model_id: str, precision: str, threads: int
) -> OpenVinoTextTower:
    """Compile (or read from the cache) the text graph of ``model`` and check it against torch fp32."""
    pad_id = int(model.text.config.pad_token_id)
    return open_text_tower(
        text_graph_dir(model_id), tokenizer, pad_id,
        convert=lambda probe: _convert(model, trim_padding(probe, pad_id)), reference=torch_text_reference(model),
        precision=precision, threads=threads,
    )


def open_text_tower(
    key_dir: Path, tokenizer, pad_id: int, *, convert: Callable[[np.ndarray], list[tuple[object, bool]]],
    reference: Callable[[np.ndarray], np.ndarray], precision: str, threads: int,
) -> OpenVinoTextTower:
    """Compile the text graph cached in ``key_dir`` (made by ``convert(probe tokens)`` when missing) and
    check it against the torch fp32 ``reference`` on the probe texts (cached beside the graph)."""
    if precision not in OV_PRECISION:
        raise TextBackendError(f"the openvino text backend runs fp32 or bf16, not {precision}")
    started = time.perf_counter()
    probe = token_ids(tokenizer, PROBE_TEXTS)
    try:
        compiled, cache_hit = compile_cached(key_dir, lambda: convert(probe), threads, OV_PRECISION[precision])
    except TextBackendError:
        raise
    except Exception as exc:  # conversion/compilation failures of any kind: one clear reason
        raise TextBackendError(f"cannot compile the text tower with OpenVINO: {type(exc).__name__}: {exc}") from exc
    tower = OpenVinoTextTower(compiled, pad_id, precision=precision, threads=max(1, threads), cache_hit=cache_hit)
    expected = cached_reference(key_dir, len(PROBE_TEXTS), lambda: reference(probe))
    worst = float(cosines(tower(probe), expected).min())
    if not worst >= PROBE_MIN_COSINE:
        raise TextBackendError(f"OpenVINO text graph differs from torch fp32 (cosine {worst:.4f} < {PROBE_MIN_COSINE})")
    record_sizes(key_dir)
    log.info("text tower: %s in %.1fs (probe cosine to torch fp32 %.4f; %s)", tower.describe(),
             time.perf_counter() - started, worst, key_dir)
    return tower


__all__ = ["TEXT_BACKENDS", "resolve_text_backend", "build_openvino_text_tower", "open_text_tower", "OpenVinoTextTower"]
