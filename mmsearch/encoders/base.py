"""The one interface every encoder offers: L2-normalised float32 embeddings for images and texts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol, Sequence, TypeVar, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # annotations only: a text query need not load Pillow
    from PIL import Image


@runtime_checkable
class Encoder(Protocol):
    """A dual encoder mapping images and texts into one space where cosine similarity means relatedness."""

    spec: str  # what the user asked for, e.g. "mmsearch-lite" or "ViT-B-32:laion2b_s34b_b79k"
    model_id: str  # spec plus a fingerprint of the weights: two equal ids embed identically
    dim: int
    device: str

    @property
    def image_transform(self) -> Callable[[Image.Image], "object"]:
        """The model's own preprocessing (PIL RGB image -> CHW tensor); runs in decode workers."""
        ...

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """PIL RGB images -> float32 [n, dim], rows L2-normalised."""
        ...

    def encode_image_tensors(self, batch: "object") -> np.ndarray:
        """An already preprocessed [n, 3, H, W] tensor -> float32 [n, dim], rows L2-normalised."""
        ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Strings -> float32 [n, dim], rows L2-normalised."""
        ...


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Row-normalise, leaving all-zero rows at zero instead of producing NaN."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def append_columns(embeddings: np.ndarray, columns: np.ndarray, dim: int) -> np.ndarray:
    """``embeddings`` [n, d] with ``columns`` [n, c] appended, rows L2-normalised again: how an extra channel
    joins an embedding (mmsearch-lite's colour and hub channels); an empty batch is [0, ``dim``]."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.shape[0] == 0:
        return np.zeros((0, dim), dtype=np.float32)
    return l2_normalise(np.concatenate([embeddings, np.asarray(columns, dtype=np.float32)], axis=1))


Batch = TypeVar("Batch")


def encode_in_batches(run: Callable[[Batch], np.ndarray], items: Batch, batch_size: int, dim: int) -> np.ndarray:
    """``run`` over slices of ``items`` (a tensor or a list) of at most ``batch_size`` -> the rows
    concatenated and L2-normalised; an empty input gives [0, dim]."""
    outs = [run(items[start : start + batch_size]) for start in range(0, len(items), batch_size)]
    return l2_normalise(np.concatenate(outs)) if outs else np.zeros((0, dim), dtype=np.float32)


def transform_input_size(transform: Callable) -> int | None:
    """The pixel size a Compose pipeline resizes/crops to (so decoders can stop at that scale), if known."""
    sizes = []
    for step in getattr(transform, "transforms", ()):
        size = getattr(step, "size", None)
        if isinstance(size, int):
            sizes.append(size)
        elif isinstance(size, (tuple, list)) and size and all(isinstance(v, int) for v in size):
            sizes.append(max(size))
    return max(sizes) if sizes else None


class PreprocessingEncoder:
    """What every encoder holding its model's preprocessing (``_preprocess``) and tokenizer
    (``_tokenizer``) offers the same way, whatever runs the towers (subclasses add encode_image_tensors)."""

    dim: int
    _preprocess: Callable
    _tokenizer: Callable

    @property
    def image_transform(self) -> Callable[[Image.Image], "object"]:
        return self._preprocess

    @property
    def input_size(self) -> int | None:
        """The pixel size the preprocessing resizes to (so decoders can stop at that scale), if known."""
        return transform_input_size(self._preprocess)

    @property
    def tokenizer(self) -> Callable:
        """The model's own tokenizer (texts -> padded token ids)."""
        return self._tokenizer

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """PIL RGB images -> float32 [n, dim], rows L2-normalised (preprocessed here, in this process)."""
        import torch

        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.encode_image_tensors(torch.stack([self._preprocess(image) for image in images]))
