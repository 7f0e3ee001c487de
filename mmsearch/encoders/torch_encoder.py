"""A torch dual-encoder wrapper: batching, device placement, mixed precision, normalisation.

Any model with open_clip's ``encode_image``/``encode_text`` methods fits, so open_clip's zoo and
mmsearch's own default model go through the same code path. Preprocessing and tokenizer are passed in
together with the model so they can never drift apart from the weights.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from mmsearch.encoders.base import PreprocessingEncoder, encode_in_batches
from mmsearch.encoders.precision import autocast, resolve_precision

log = logging.getLogger(__name__)


class TorchDualEncoder(PreprocessingEncoder):
    """Wraps a torch model + its preprocess + its tokenizer behind the :class:`Encoder` protocol."""

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[Sequence[str]], torch.Tensor],
        *,
        spec: str,
        model_id: str,
        device: str = "cpu",
        batch_size: int = 64,
        precision: str = "fp32",
    ) -> None:
        self.spec = spec
        self.model_id = model_id
        self.device = device
        self.batch_size = batch_size
        self.precision = resolve_precision(precision, device)
        self._preprocess = preprocess
        self._tokenizer = tokenizer
        self.model = model.to(device).eval()
        self.image_backend = "torch"  # what runs encode_image_tensors (see use_image_runner)
        self._image_runner: Callable[[torch.Tensor], np.ndarray] | None = None
        self.text_backend = "torch"  # what runs encode_texts (see use_text_runner)
        self._text_runner: Callable[[torch.Tensor], np.ndarray] | None = None
        if device == "cpu":
            # channels_last lets oneDNN pick faster convolution kernels on CPU; harmless for ViTs.
            self.model = self.model.to(memory_format=torch.channels_last)
        # a model that knows its width saves a text-tower call at every load (and image-only runs never need one)
        self.dim = int(getattr(self.model, "embedding_dim", 0) or self.encode_texts(["probe"]).shape[1])

    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.precision, self.device)

    def use_image_runner(self, runner: Callable[[torch.Tensor], np.ndarray], description: str) -> None:
        """Route image batches through ``runner`` (a compiled image graph, already checked against this
        model) instead of the torch module; texts keep using torch."""
        self._image_runner = runner
        self.image_backend = description

    @property
    def takes_uint8_pixels(self) -> bool:
        """True when ``encode_image_tensors`` takes uint8 pixels as decoded (the compiled image graph
        normalises them), so indexing can skip normalising batches in the main process."""
        return bool(getattr(self._image_runner, "accepts_uint8", False))

    def use_text_runner(self, runner: Callable[[torch.Tensor], np.ndarray], description: str) -> None:
        """Route token batches through ``runner`` (a compiled text graph, already checked against this
        model) instead of the torch module."""
        self._text_runner = runner
        self.text_backend = description

    def encode_image_tensors(self, batch: torch.Tensor) -> np.ndarray:
        """Preprocessed pixels [n, 3, H, W] -> L2-normalised embeddings, ``batch_size`` images per call of
        the compiled graph when one is attached, else of the torch module."""
        return encode_in_batches(self._image_runner or self._run_image_module, batch, self.batch_size, self.dim)

    def _run_image_module(self, chunk: torch.Tensor) -> np.ndarray:
        with torch.inference_mode(), self._autocast():
            chunk = chunk.to(self.device, non_blocking=True)
            if self.device == "cpu":
                chunk = chunk.contiguous(memory_format=torch.channels_last)
            return self.model.encode_image(chunk).float().cpu().numpy()

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        with torch.inference_mode(), self._autocast():
            return encode_in_batches(self._run_text_chunk, list(texts), self.batch_size, getattr(self, "dim", 0))

    def _run_text_chunk(self, chunk: list[str]) -> np.ndarray:
        tokens = self._tokenizer(chunk).to(self.device)
        if self._text_runner is not None:
            return self._text_runner(tokens)
        return self.model.encode_text(tokens).float().cpu().numpy()
