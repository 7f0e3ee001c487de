"""The default model's image preprocessing in PIL + torch alone: shortest side, centre crop, normalise.

Importing this module imports no torch (only running ToTensor/Normalize does): a text-only query builds
the model's preprocessing without paying for torch.

Why not torchvision's transforms: importing torchvision also imports torchvision.ops and with it
torch._dynamo, ~1-2 s of every `mmsearch search` and `mmsearch index` on the 2-core machine, for four
small steps. They compute what torchvision's ``Resize(int, BICUBIC)``, ``CenterCrop``, ``ToTensor``
and ``Normalize`` compute on PIL images (same output sizes, same rounding, PIL's own antialiased
resampling; the resize resamples only the cropped region, see ResizeCenterCrop), so embeddings do not
change: tests/test_early_decode.py compares the tensors with open_clip's pipeline. The step classes
keep torchvision's names and attributes (``transforms``, ``size``, ``mean``/``std``) because the indexer's fast path splits pipelines by them (mmsearch.imaging.fastpath).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # annotations only: importing torch is what a one-shot query avoids
    import torch


@dataclass(frozen=True)
class Compose:
    """Steps applied in order (picklable, so decode workers can run it)."""

    transforms: tuple[Callable, ...]

    def __call__(self, image):
        for step in self.transforms:
            image = step(image)
        return image


@dataclass(frozen=True)
class ResizeCenterCrop:
    """Shortest side to ``size`` keeping the aspect ratio, then the central ``size`` x ``size`` pixels.

    Output sizes and crop offsets are torchvision's (the long side truncated, offsets rounded), but only
    the region that survives the crop is resampled (PIL's ``box``): the same filter centres and taps
    (pixels outside the box still feed the edge taps), ~17% less resampling work for a 4:3 photo, the
    decode workers' second-largest cost after the JPEG decode. Floating-point rounding of the filter
    positions moves a pixel by at most 1/255 now and then (tests/test_early_decode.py)."""

    size: int
    resample: int = Image.Resampling.BICUBIC

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.size * long / short)
        new_width, new_height = (self.size, new_long) if width <= height else (new_long, self.size)
        left, top = int(round((new_width - self.size) / 2.0)), int(round((new_height - self.size) / 2.0))
        if image.mode in ("1", "P"):  # resized nearest-neighbour by PIL: a box would pick other pixels
            return image.resize((new_width, new_height), self.resample).crop((left, top, left + self.size, top + self.size))
        scale_x, scale_y = width / new_width, height / new_height
        box = (left * scale_x, top * scale_y, (left + self.size) * scale_x, (top + self.size) * scale_y)
        return image.resize((self.size, self.size), self.resample, box=box)


@dataclass(frozen=True)
class ToRGB:
    """Any PIL mode -> RGB (a no-op for RGB images)."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.convert("RGB") if image.mode != "RGB" else image


@dataclass(frozen=True)
class ToTensor:
    """RGB PIL image -> float32 [3, H, W] in [0, 1]."""

    def __call__(self, image: Image.Image) -> "torch.Tensor":
        import torch

        pixels = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1)
        return pixels.to(torch.float32).div_(255.0)


@dataclass(frozen=True)
class Normalize:
    """(x - mean) / std per channel."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, tensor: "torch.Tensor") -> "torch.Tensor":
        import torch

        mean = torch.tensor(self.mean, dtype=tensor.dtype).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=tensor.dtype).view(-1, 1, 1)
        return (tensor - mean) / std


def shortest_side_crop(size: int, mean: Sequence[float], std: Sequence[float]) -> Compose:
    """Shortest side to ``size`` (bicubic), centre crop, RGB, to [0, 1], normalise."""
    return Compose((ResizeCenterCrop(size), ToRGB(), ToTensor(), Normalize(tuple(mean), tuple(std))))
