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
from typing import Callable

import numpy as np
import torch

from mmsearch.encoders.lite import trim_padding
from mmsearch.encoders.openvino_tower import (
    IMAGE_BACKENDS, _OV_PRECISION, _cosines, cache_key, cache_root, cached_reference, compile_options, load_or_convert, open_core,
    openvino_available, resolve_backend,
)
from mmsearch.errors import TextBackendError

log = logging.getLogger(__name__)

TEXT_BACKENDS = IMAGE_BACKENDS  # the same choice for both towers
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


def _has_text_graph(model: torch.nn.Module) -> bool:
    return hasattr(model, "join_text") and hasattr(getattr(model, "text", None), "config")


class _TextGraph(torch.nn.Module):
    """Trimmed token ids [n, t] -> joint text embedding [n, dim] (not normalised; the caller does that)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.join_text(self.model.text(tokens))


def graph_key(model_id: str) -> str:
    return cache_key(["text", GRAPH_FORMAT, model_id])


def _convert(model: torch.nn.Module, tokens: torch.Tensor) -> list[tuple[object, bool]]:
    import openvino as ov

    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter, not user news
        graph = ov.convert_model(_TextGraph(model).eval(), example_input=tokens, input=[ov.PartialShape([-1, -1])])
    return [(graph, True)]


class OpenVinoTextTower:
    """Compiled text graph: token ids (padded like the tokenizer returns them) -> float32 [n, dim]."""

    def __init__(self, compiled, pad_id: int, *, precision: str, threads: int, cache_hit: bool) -> None:
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()  # one infer request, shared by the server's threads one at a time
        self.pad_id = pad_id
        self.precision, self.threads, self.cache_hit = precision, threads, cache_hit

    def __call__(self, tokens: torch.Tensor) -> np.ndarray:
        ids = trim_padding(tokens, self.pad_id).to(torch.int64).numpy()
        with self._lock:
            return np.array(self._request.infer({0: ids})[0], dtype=np.float32)

    def describe(self) -> str:
        return f"openvino {self.precision}, {self.threads} thread(s), graph {'cached' if self.cache_hit else 'converted'}"


def torch_text_reference(model: torch.nn.Module) -> Callable[[torch.Tensor], np.ndarray]:
    """probe token ids -> ``model``'s fp32 text embeddings (the reference a compiled graph must match)."""

    def reference(tokens: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return model.join_text(model.text(trim_padding(tokens, model.text.config.pad_token_id))).float().numpy()

    return reference


def text_graph_dir(model_id: str) -> Path:
    """Where the converted text graph of a model (and its probe reference) is cached."""
    return cache_root() / graph_key(model_id)


def build_openvino_text_tower(
    model: torch.nn.Module, tokenizer, *, model_id: str, precision: str, threads: int
) -> OpenVinoTextTower:
    """Compile (or read from the cache) the text graph of ``model`` and check it against torch fp32."""
    pad_id = int(model.text.config.pad_token_id)
    return open_text_tower(
        text_graph_dir(model_id), tokenizer, pad_id,
        convert=lambda probe: _convert(model, trim_padding(probe, pad_id)), reference=torch_text_reference(model),
        precision=precision, threads=threads,
    )


def open_text_tower(
    key_dir: Path, tokenizer, pad_id: int, *, convert: Callable[[torch.Tensor], list[tuple[object, bool]]],
    reference: Callable[[torch.Tensor], np.ndarray], precision: str, threads: int,
) -> OpenVinoTextTower:
    """Compile the text graph cached in ``key_dir`` (made by ``convert(probe tokens)`` when missing) and
    check it against the torch fp32 ``reference`` on the probe texts (cached beside the graph)."""
    if precision not in _OV_PRECISION:
        raise TextBackendError(f"the openvino text backend runs fp32 or bf16, not {precision}")
    started = time.perf_counter()
    probe = tokenizer(list(PROBE_TEXTS))
    try:
        graphs, cache_hit = load_or_convert(key_dir, lambda: convert(probe))
        compiled = open_core(key_dir).compile_model(graphs[0][0], "CPU", compile_options(threads, _OV_PRECISION[precision]))
    except TextBackendError:
        raise
    except Exception as exc:  # conversion/compilation failures of any kind: one clear reason
        raise TextBackendError(f"cannot compile the text tower with OpenVINO: {type(exc).__name__}: {exc}") from exc
    tower = OpenVinoTextTower(compiled, pad_id, precision=precision, threads=max(1, threads), cache_hit=cache_hit)
    expected = cached_reference(key_dir, len(PROBE_TEXTS), lambda: reference(probe))
    worst = float(_cosines(tower(probe), expected).min())
    if not worst >= PROBE_MIN_COSINE:
        raise TextBackendError(f"OpenVINO text graph differs from torch fp32 (cosine {worst:.4f} < {PROBE_MIN_COSINE})")
    log.info("text tower: %s in %.1fs (probe cosine to torch fp32 %.4f; %s)", tower.describe(),
             time.perf_counter() - started, worst, key_dir)
    return tower


__all__ = ["TEXT_BACKENDS", "resolve_text_backend", "build_openvino_text_tower", "open_text_tower", "OpenVinoTextTower"]
