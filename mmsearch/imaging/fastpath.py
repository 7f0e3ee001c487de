"""Split a model's preprocessing so workers ship uint8 pixels and the main process normalises a batch.

An open_clip/torchvision preprocessing pipeline ends in ``ToTensor`` + ``Normalize``. Running those in
the decode workers sends float32 tensors (4 bytes a pixel) through shared memory and normalises one
image at a time; stopping the workers at the cropped uint8 image quarters what crosses processes, and
the main process then normalises the whole batch in one vectorised step, straight into the
channels_last layout the CPU convolution kernels want. The arithmetic is the same as ToTensor +
Normalize (x / 255, then (x - mean) / std), so embeddings do not change.

A pipeline of any other shape is used as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from PIL import Image

_TO_TENSOR = ("ToTensor", "MaybeToTensor")


def pil_to_uint8_chw(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 tensor [3, H, W]: one copy out of PIL, one transposing copy (was four copies)."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    return torch.from_numpy(np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1)))


@dataclass
class SplitTransform:
    """``worker`` runs per image in decode workers; ``finish`` runs per batch in the main process."""

    worker: Callable[[Image.Image], torch.Tensor]
    finish: Callable[[torch.Tensor], torch.Tensor]
    split: bool  # False when the pipeline had an unknown shape and runs whole in the workers


class _PilStage:
    """The pipeline's steps before ToTensor, then uint8 CHW (picklable for worker processes)."""

    def __init__(self, steps: list) -> None:
        self.steps = steps

    def __call__(self, image: Image.Image) -> torch.Tensor:
        for step in self.steps:
            image = step(image)
        return pil_to_uint8_chw(image)


class BatchNormaliser:
    """uint8 [n, 3, H, W] -> float32 (x / 255 - mean) / std, channels_last."""

    def __init__(self, mean, std) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.dtype != torch.uint8:
            return batch
        x = batch.contiguous(memory_format=torch.channels_last).to(torch.float32).div_(255.0)
        return x.sub_(self.mean).div_(self.std)


def _identity(batch: torch.Tensor) -> torch.Tensor:
    return batch


def split_transform(transform: Callable) -> SplitTransform:
    """Split ``Compose([..., ToTensor, Normalize])`` (torchvision's, or mmsearch.imaging.preprocess's
    steps of the same names); any other pipeline runs whole in the workers."""
    steps = list(getattr(transform, "transforms", ()))
    if len(steps) >= 2 and type(steps[-2]).__name__ in _TO_TENSOR and type(steps[-1]).__name__ == "Normalize":
        normalise = steps[-1]
        return SplitTransform(_PilStage(steps[:-2]), BatchNormaliser(normalise.mean, normalise.std), True)
    return SplitTransform(transform, _identity, False)


def same_worker_stage(a: SplitTransform, b: SplitTransform) -> bool:
    """Whether two split pipelines do the same per-image work in the workers (same steps, same settings)."""
    steps_a, steps_b = getattr(a.worker, "steps", None), getattr(b.worker, "steps", None)
    return a.split and b.split and steps_a is not None and repr(steps_a) == repr(steps_b)
