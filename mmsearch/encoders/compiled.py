"""mmsearch-lite run from its cached OpenVINO graphs alone, without building the torch model.

Why: on CPU both towers of the default model run as compiled OpenVINO graphs (openvino_tower,
openvino_text), yet every load also built the torch model they were converted from: importing timm,
open_clip and transformers and constructing EfficientNet and MiniLM took ~3.5-4.5 s of every
`mmsearch search` and `mmsearch index` on the 2-core machine, only to check the cached graphs against
probe references that are themselves cached. This loader reads the graphs, the shipped preprocessing
(from the weights file's metadata) and MiniLM's tokenizer (``tokenizers`` only) instead.

When: ``load_encoder`` tries it first for ``mmsearch-lite`` on CPU when both towers resolve to OpenVINO.
It needs what a full load leaves in the cache for these exact weights (graphs keyed by the weights'
sha256 and the torch/OpenVINO versions, plus the torch fp32 probe references; the image graph may be the
shipped int8 one, see openvino_int8); so the first load after an install or a retrain is a full one.
Each graph must still pass its probe check against the cached torch reference; if anything is missing
or fails, the full load runs instead, exactly as before.

The image graph is compiled on first use, not at load: a one-shot text search needs only the text graph
(and so imports neither torch nor the image side); if the image graph then fails its check, the image
side of a full load takes over (``fallback``), as the full load would have from the start.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mmsearch.encoders.base import Encoder, PreprocessingEncoder, encode_in_batches
from mmsearch.encoders.lite_files import lite_config, lite_model_id, make_preprocess, make_tokenizer
from mmsearch.encoders.openvino_common import REFERENCE_FILE, image_graph_dir
from mmsearch.encoders.openvino_text import open_text_tower, text_graph_dir, token_ids
from mmsearch.errors import ImageBackendError, TextBackendError

log = logging.getLogger(__name__)


class CompiledLiteEncoder(PreprocessingEncoder):
    """The Encoder protocol over compiled image and text graphs (CPU only): no torch module behind it.

    ``open_image_tower()`` compiles and checks the image graph (first image call); ``fallback()`` is a
    full load whose image side is used instead when that fails."""

    device = "cpu"

    def __init__(self, *, spec: str, model_id: str, preprocess: Callable[[], Callable], tokenizer, text_tower,
                 open_image_tower: Callable[[], object], fallback: Callable[[], Encoder], dim: int, batch_size: int,
                 precision: str) -> None:
        self.spec, self.model_id, self.dim = spec, model_id, dim
        self.batch_size, self.precision = batch_size, precision
        self._make_preprocess, self._built_preprocess, self._tokenizer = preprocess, None, tokenizer
        self._text_tower = text_tower
        self._open_image_tower, self._fallback = open_image_tower, fallback
        self._image_tower = None
        self._image_fallback: Encoder | None = None
        self._image_lock = threading.Lock()
        self.text_backend = text_tower.describe()

    @property
    def _preprocess(self) -> Callable:
        """The image preprocessing, built on first use (a text query never needs it)."""
        if self._built_preprocess is None:
            self._built_preprocess = self._make_preprocess()
        return self._built_preprocess

    def _image_side(self):
        """-> the compiled image tower, or the full load's encoder when the graph could not be used."""
        if self._image_tower is None and self._image_fallback is None:
            with self._image_lock:
                if self._image_tower is None and self._image_fallback is None:
                    try:
                        self._image_tower = self._open_image_tower()
                    except (ImageBackendError, LookupError) as exc:
                        log.info("cached image graph of %s not used (%s): loading the model's image side", self.model_id, exc)
                        self._image_fallback = self._fallback()
        return self._image_tower if self._image_tower is not None else self._image_fallback

    @property
    def image_backend(self) -> str:
        """What runs images (compiling the image graph first if no image was encoded yet)."""
        side = self._image_side()
        return side.describe() if side is self._image_tower else side.image_backend

    @property
    def takes_uint8_pixels(self) -> bool:
        side = self._image_side()
        return bool(side.accepts_uint8) if side is self._image_tower else bool(getattr(side, "takes_uint8_pixels", False))

    def encode_image_tensors(self, batch) -> np.ndarray:
        side = self._image_side()
        if side is not self._image_tower:
            return side.encode_image_tensors(batch)
        return encode_in_batches(side, batch, self.batch_size, self.dim)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return encode_in_batches(lambda chunk: self._text_tower(token_ids(self._tokenizer, chunk)), list(texts), self.batch_size, self.dim)


def _needs_full_model(what: str) -> Callable:
    """A stand-in for converting a graph or computing its torch reference: both need the torch model."""

    def refuse(*_args):
        raise LookupError(f"no cached {what}")

    return refuse


def _has_reference(key_dir: Path) -> bool:
    return (key_dir / REFERENCE_FILE).is_file()


def load_compiled_lite(spec: str, weights: Path | None, *, batch_size: int, threads: int, precision: str,
                       fallback: Callable[[], Encoder], text_threads: int) -> CompiledLiteEncoder | None:
    """-> the encoder of ``mmsearch-lite`` with these ``weights`` (None: the bridge alone) from its cached
    graphs, or None when they are not all cached or the text graph fails its check (the caller then does a
    full load). ``precision`` is resolved (fp32 or bf16); ``threads`` / ``text_threads`` are the image / text
    towers' threads, resolved by the caller; ``fallback()`` is that full load, used for the image side if
    the image graph fails its check at first use."""
    started = time.perf_counter()
    cfg = lite_config(weights)
    model_id = lite_model_id(weights)
    image_dir, text_dir = image_graph_dir(model_id, cfg.image_size), text_graph_dir(model_id)
    if not (_has_reference(image_dir) and _has_reference(text_dir)):
        log.info("compiled graphs of %s are not all cached yet: building the model", model_id)
        return None
    tokenizer = make_tokenizer(cfg)
    try:
        text_tower = open_text_tower(
            text_dir, tokenizer, tokenizer.pad_id, convert=_needs_full_model("text graph"),
            reference=_needs_full_model("text probe reference"), precision=precision, threads=text_threads,
        )
    except (TextBackendError, LookupError) as exc:
        log.info("cached graphs of %s not used (%s): building the model", model_id, exc)
        return None

    def open_image_tower():
        from mmsearch.encoders.openvino_int8 import choose_image_tower
        from mmsearch.encoders.openvino_tower import accept_uint8_pixels, open_image_tower as open_float_tower

        refuse_reference = _needs_full_model("image probe reference")
        tower = choose_image_tower(
            model_id=model_id, image_size=cfg.image_size, precision=precision, threads=threads, reference=refuse_reference,
            float_tower=lambda: open_float_tower(image_dir, convert=_needs_full_model("image graph"), reference=refuse_reference,
                                                 image_size=cfg.image_size, precision=precision, threads=threads),
        )
        return accept_uint8_pixels(tower, make_preprocess(cfg))

    log.info("model %s (%s) from its compiled graphs in %.2fs", spec, model_id, time.perf_counter() - started)
    return CompiledLiteEncoder(spec=spec, model_id=model_id, preprocess=lambda: make_preprocess(cfg), tokenizer=tokenizer, text_tower=text_tower,
                               open_image_tower=open_image_tower, fallback=fallback, dim=cfg.embedding_dim,
                               batch_size=batch_size, precision=precision)
