"""The image tower (+ joint head) compiled by OpenVINO: the fast CPU path for indexing.

Why: on a 2-core CPU, EfficientNet-Lite0 under torch's bf16 autocast runs ~45-100 images/s on one
thread; compiled by OpenVINO it runs about twice that, and it slows down far less when the cores are
shared with decode workers (torch's OpenMP pool spins in barriers when preempted). Everything from
pixels to the joint embedding is compiled, so the head, softmax bridge and normalisation are fused too.
The stem and first block of EfficientNet run in fp32 and the rest in bf16 (see ``_stages``).

Choice (``MMSEARCH_IMAGE_BACKEND``): ``torch``; ``openvino`` (an error if the package is missing);
``auto`` = OpenVINO on CPU for the default model when the package is installed (a dependency of
mmsearch; it can be missing only from a hand-made environment), else torch. Whatever was asked, a compiled graph is used only if it passes a
check against torch fp32 on probe images at load time (cosine per image >= PROBE_MIN_COSINE);
otherwise ``auto`` falls back to torch with a warning and ``openvino`` is an error.

The converted graphs are kept on disk (``$MMSEARCH_CACHE_DIR/openvino/<key>/``), keyed by the model id
(which carries the weights file's sha256), the input size and the torch/OpenVINO versions, together
with OpenVINO's compiled-kernel cache and the probe's torch reference: conversion (10-30 s) happens
once per model, later loads read it (~0.3 s).
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from mmsearch.encoders.openvino_common import (
    OV_PRECISION, cached_reference, compile_options, cosines, image_graph_dir, load_or_convert, open_core,
)
from mmsearch.errors import ImageBackendError

log = logging.getLogger(__name__)

PROBE_IMAGES = 4
PROBE_MIN_COSINE = 0.99
UINT8_MIN_COSINE = 0.9999  # uint8 input normalised in the graph vs the float path: the same arithmetic


class _ImageGraph(torch.nn.Module):
    """pixels -> joint embedding, as one traceable module (any model with ``encode_image``)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images)


class _EfficientNetStem(torch.nn.Module):
    """pixels -> output of the first block (stem conv, BN, first depthwise-separable block)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.trunk = model.trunk

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk.blocks[0](self.trunk.bn1(self.trunk.conv_stem(images)))


class _EfficientNetRest(torch.nn.Module):
    """first block's output -> joint embedding (the remaining blocks, head conv, pooling, classifier, join)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        trunk = self.model.trunk
        for block in trunk.blocks[1:]:
            hidden = block(hidden)
        pooled = trunk.forward_head(trunk.bn2(trunk.conv_head(hidden)), pre_logits=True)
        return self.model.join_image(pooled, trunk.classifier(pooled))


def _stages(model: torch.nn.Module) -> list[tuple[torch.nn.Module, bool]]:
    """-> [(module, runs at the requested precision)], chained in order.

    EfficientNet's first block is precision-sensitive: run in bf16 it alone takes per-image cosine to
    fp32 down to ~0.95 on photos (OpenVINO rounds every activation to bf16, unlike torch's autocast).
    It is ~15% of the work, so it stays fp32 and the rest runs bf16: cosine >= 0.998 at ~90% of the
    all-bf16 speed. Other models compile as one graph."""
    trunk = getattr(model, "trunk", None)
    if all(hasattr(model, name) for name in ("join_image", "trunk")) and all(
        hasattr(trunk, name) for name in ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "forward_head", "classifier")
    ):
        return [(_EfficientNetStem(model), False), (_EfficientNetRest(model), True)]
    return [(_ImageGraph(model), True)]


def _convert_stage(module: torch.nn.Module, example: torch.Tensor, first: bool):
    """torch module -> OpenVINO model of any batch size; the first stage takes float NHWC pixels (a
    channels_last batch passes as a view, no copy)."""
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the converter traces the module: tracer and deprecation chatter, not user news
        graph = ov.convert_model(module.eval(), example_input=example, input=[-1, *example.shape[1:]])
        following = module(example)
    if first:
        ppp = PrePostProcessor(graph)
        ppp.input().tensor().set_layout(ov.Layout("NHWC"))
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        graph = ppp.build()
    return graph, following


def _convert(model: torch.nn.Module, image_size: int) -> list[tuple[object, bool]]:
    """torch model -> [(OpenVINO model, runs at the requested precision)]."""
    example = torch.zeros(2, 3, image_size, image_size)
    graphs = []
    for position, (module, at_requested) in enumerate(_stages(model)):
        graph, example = _convert_stage(module, example, position == 0)
        graphs.append((graph, at_requested))
    return graphs


def _uint8_input(graph, mean: list[float], std: list[float]):
    """A copy of the first stage (float NHWC input) that takes uint8 NHWC pixels and normalises them itself."""
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    ppp = PrePostProcessor(graph.clone())
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    ppp.input().model().set_layout(ov.Layout("NHWC"))
    ppp.input().preprocess().convert_element_type(ov.Type.f32).mean([255.0 * m for m in mean]).scale([255.0 * d for d in std])
    return ppp.build()


class OpenVinoImageTower:
    """Compiled image graph stages: float [n, 3, H, W] batch (any memory layout) -> float32 [n, dim].

    One infer request per stage is reused; a lock keeps concurrent callers (the HTTP server's
    threads) from sharing them mid-call."""

    uint8_min_cosine = UINT8_MIN_COSINE  # how close the uint8-input path must be to the float path

    def __init__(self, compiled: list, *, precision: str, threads: int, cache_hit: bool, key_dir: Path,
                 image_size: int = 224, compile_uint8_stage: Callable[[list[float], list[float]], object] | None = None) -> None:
        self._requests = [stage.create_infer_request() for stage in compiled]
        self._uint8_request = None  # first stage taking uint8 pixels, see enable_uint8_input
        self._compile_uint8_stage = compile_uint8_stage
        self._probe_size = image_size
        self._lock = threading.Lock()
        self.precision = precision
        self.threads = threads
        self.cache_hit = cache_hit
        self.key_dir = key_dir

    @property
    def accepts_uint8(self) -> bool:
        """True once uint8 [n, 3, H, W] pixels can be passed as they come from the decode workers."""
        return self._uint8_request is not None

    def enable_uint8_input(self, mean: Sequence[float], std: Sequence[float]) -> bool:
        """Also accept uint8 pixels, normalised inside the graph as ``(x / 255 - mean) / std``.

        Indexing then skips the main process's float conversion and normalisation (~8% of the main
        thread) and the first stage reads a quarter of the bytes. Kept only if it matches the float path
        on the probe images (cosine >= UINT8_MIN_COSINE); -> whether it is on."""
        if self._compile_uint8_stage is None:
            return False
        mean, std = [float(m) for m in mean], [float(s) for s in std]
        request = self._compile_uint8_stage(mean, std).create_infer_request()
        probe = probe_batch(self._probe_size)
        pixels = ((probe * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)) * 255).round().clamp(0, 255)
        as_float = (pixels / 255 - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
        reference = self(as_float)
        self._uint8_request = request
        worst = float(cosines(self(pixels.to(torch.uint8)), reference).min())
        if worst < self.uint8_min_cosine:
            self._uint8_request = None
            log.warning("uint8 input to the OpenVINO image graph differs from the float path (cosine %.5f): not used", worst)
            return False
        return True

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        uint8 = batch.dtype == torch.uint8
        if uint8 and self._uint8_request is None:
            raise ImageBackendError("uint8 pixels given to an OpenVINO image graph without uint8 input")
        data = (batch if uint8 else batch.float()).permute(0, 2, 3, 1).contiguous().numpy()  # a view when channels_last
        with self._lock:
            # Shared inputs/outputs: no copy in, and each stage's output (25 MB for a batch of 32 after the
            # first block) is the request's own reused buffer instead of a fresh allocation per batch,
            # which otherwise fragments the heap and grows RSS with every image indexed.
            requests = [self._uint8_request, *self._requests[1:]] if uint8 else self._requests
            for request in requests:
                data = request.infer({0: data}, share_inputs=True, share_outputs=True)[0]
            return np.array(data, dtype=np.float32)  # the last request's buffer is reused by the next call

    def describe(self) -> str:
        stages = f", {len(self._requests)} stages" if len(self._requests) > 1 else ""
        return f"openvino {self.precision}{stages}, {self.threads} thread(s), graph {'cached' if self.cache_hit else 'converted'}"


def accept_uint8_pixels(tower: OpenVinoImageTower, transform: Callable) -> OpenVinoImageTower:
    """Let the compiled image graph take the decode workers' uint8 pixels when the model's preprocessing
    ends in ToTensor + Normalize (see mmsearch.imaging.fastpath), normalising them inside the graph."""
    from mmsearch.imaging.fastpath import split_transform

    stages = split_transform(transform)
    if stages.split:
        tower.enable_uint8_input(stages.finish.mean.flatten().tolist(), stages.finish.std.flatten().tolist())
    return tower


def probe_batch(image_size: int, count: int = PROBE_IMAGES) -> torch.Tensor:
    """Deterministic photo-like inputs (smooth colour fields with edges), normalised to about [-1, 1]."""
    gen = torch.Generator().manual_seed(1234)
    coarse = torch.rand(count, 3, 7, 7, generator=gen) * 2 - 1
    smooth = torch.nn.functional.interpolate(coarse, size=(image_size, image_size), mode="bicubic", align_corners=False)
    edges = (torch.rand(count, 3, image_size, image_size, generator=gen) - 0.5) * 0.3
    return (smooth + edges).clamp(-1, 1).contiguous(memory_format=torch.channels_last)


def check_against_reference(tower: OpenVinoImageTower, reference: Callable[[torch.Tensor], np.ndarray], image_size: int,
                            min_cosine: float | None = None) -> float:
    """-> min cosine between the compiled graph and the torch fp32 embeddings of the probe images
    (``reference(probe)``, computed once and cached beside the graph); raises below ``min_cosine``
    (None: PROBE_MIN_COSINE)."""
    min_cosine = PROBE_MIN_COSINE if min_cosine is None else min_cosine
    probe = probe_batch(image_size)
    expected = cached_reference(tower.key_dir, len(probe), lambda: reference(probe))
    worst = float(cosines(tower(probe), expected).min())
    if not worst >= min_cosine:
        raise ImageBackendError(f"OpenVINO image graph differs from torch fp32 (cosine {worst:.4f} < {min_cosine})")
    return worst


def torch_image_reference(model: torch.nn.Module) -> Callable[[torch.Tensor], np.ndarray]:
    """probe pixels -> ``model``'s fp32 embeddings (the reference a compiled graph must match)."""

    def reference(probe: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return model.encode_image(probe).float().numpy()

    return reference


M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
MMAP_THRESHOLD_BYTES = 1 << 20


def pin_mmap_threshold() -> bool:
    """Keep glibc from raising its mmap threshold, so each batch's 19-25 MB buffers go back to the OS.

    glibc raises the threshold to the size of the largest freed mmapped block; from then on these
    buffers come from the heap, and with OpenVINO's threads next to the decode workers' shared-memory
    batches the heap fragments: RSS grew ~0.5 MB per indexed image (1.4 GB -> 2.2 GB over 2,000
    images). Pinned at 1 MB it stays flat. Returns False where the C library has no mallopt."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


def build_openvino_tower(
    model: torch.nn.Module, *, model_id: str, image_size: int, precision: str, threads: int
) -> OpenVinoImageTower:
    """Compile (or read from the cache) the image graph of ``model`` and check it against torch fp32.

    ``precision`` is the resolved torch precision (fp32 or bf16); ``threads`` OpenVINO's inference threads."""
    return open_image_tower(
        image_graph_dir(model_id, image_size), convert=lambda: _convert(model, image_size),
        reference=torch_image_reference(model), image_size=image_size, precision=precision, threads=threads,
    )


def open_image_tower(
    key_dir: Path, *, convert: Callable[[], list[tuple[object, bool]]], reference: Callable[[torch.Tensor], np.ndarray],
    image_size: int, precision: str, threads: int,
) -> OpenVinoImageTower:
    """Compile the image graph cached in ``key_dir`` (made by ``convert()`` when missing) and check it
    against the torch fp32 ``reference`` on the probe images (cached beside the graph after the first time)."""
    if precision not in OV_PRECISION:
        raise ImageBackendError(f"the openvino image backend runs fp32 or bf16, not {precision}")
    started = time.perf_counter()
    try:
        graphs, cache_hit = load_or_convert(key_dir, convert)
        core = open_core(key_dir)
        compiled = [
            core.compile_model(graph, "CPU", compile_options(threads, OV_PRECISION[precision] if at_requested else "f32"))
            for graph, at_requested in graphs
        ]
    except ImageBackendError:
        raise
    except Exception as exc:  # conversion/compilation failures of any kind: one clear reason
        raise ImageBackendError(f"cannot compile the image tower with OpenVINO: {type(exc).__name__}: {exc}") from exc
    pin_mmap_threshold()
    first_graph, first_at_requested = graphs[0]

    def compile_uint8_stage(mean: list[float], std: list[float]):
        stage_precision = OV_PRECISION[precision] if first_at_requested else "f32"
        return core.compile_model(_uint8_input(first_graph, mean, std), "CPU", compile_options(threads, stage_precision))

    tower = OpenVinoImageTower(compiled, precision=precision, threads=max(1, threads), cache_hit=cache_hit, key_dir=key_dir,
                               image_size=image_size, compile_uint8_stage=compile_uint8_stage)
    worst = check_against_reference(tower, reference, image_size)
    log.info("image tower: %s in %.1fs (probe cosine to torch fp32 %.4f; %s)", tower.describe(),
             time.perf_counter() - started, worst, key_dir)
    return tower
