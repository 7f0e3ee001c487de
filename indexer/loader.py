"""Decode and preprocess images in DataLoader worker processes.

A file that cannot be decoded yields a failure record carrying its position in the batch list, so the
caller drops exactly that item: metadata can never slide onto a neighbour's vector.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator, Sequence

import torch
from PIL import Image, ImageFile, ImageOps
from torch.utils.data import DataLoader, Dataset

log = logging.getLogger(__name__)

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is a failure to report, not a grey half-image
Image.MAX_IMAGE_PIXELS = None  # we enforce our own cap, with a clear reason, in open_image


class DecodeError(Exception):
    """The file is not a readable image (or is beyond the pixel cap)."""


# Formats an untrusted upload may be: the raster formats people search with. Anything else (EPS, which
# runs Ghostscript; PSD; exotic plugins) is refused whatever the file is called.
UPLOAD_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


def open_image(
    path: "str | BinaryIO",
    max_pixels: int = 90_000_000,
    target_size: int | None = None,
    formats: Sequence[str] | None = None,
) -> Image.Image:
    """Open an image file (path or binary file object) as RGB: EXIF rotation applied, transparency
    composited on white.

    With ``target_size``, JPEGs are decoded at a reduced scale (draft mode) no smaller than it, which
    is several times faster for photos far larger than the model's input; the pixel cap applies to
    what is actually decoded, so a huge JPEG is read at 1/2..1/8 scale instead of being refused.
    ``formats`` limits which decoders may be tried (the content decides, never the file name).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.filterwarnings("ignore", message="Corrupt EXIF data")
            if formats:
                Image.init()  # register every plugin, so each allowed format id is known
            im = Image.open(path, formats=list(formats) if formats else None)
            if target_size and im.format in ("JPEG", "MPO"):
                im.draft("RGB", (target_size, target_size))
            width, height = im.size
            if width * height > max_pixels:
                raise DecodeError(f"image is {width}x{height} = {width * height:,} pixels, above the cap of {max_pixels:,}")
            im.load()
            return to_rgb(_upright(im))
    except DecodeError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(_reason(exc)) from exc
    except Exception as exc:  # PIL raises odd types for odd files; any of them means "not decodable"
        raise DecodeError(f"{type(exc).__name__}: {exc}") from exc


def _upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a damaged EXIF block leaves the pixels as stored rather than failing."""
    try:
        ImageOps.exif_transpose(im, in_place=True)  # no copy of a large image that needs no turning
        return im
    except Exception as exc:  # Pillow raises assorted types on malformed EXIF
        log.debug("ignoring unreadable EXIF orientation: %s", exc)
        return im


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if "cannot identify image file" in text:
        return "not a readable image (unknown or corrupt format)"
    if "truncated" in text.lower():
        return "truncated image file"
    return text.split(" '/")[0]


def to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "RGBa"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits rather than clipping everything to white
        im = im.point(lambda v: v / 256).convert("L")
    return im if im.mode == "RGB" else im.convert("RGB")


@dataclass
class DecodedBatch:
    positions: list[int]  # positions (in the caller's list) of the images in `pixels`, in order
    pixels: torch.Tensor  # [len(positions), 3, H, W]
    failures: list[tuple[int, str]]  # (position, reason)


class _ImageFiles(Dataset):
    def __init__(self, paths: Sequence[str], transform: Callable, max_pixels: int, target_size: int | None) -> None:
        self.paths, self.transform = list(paths), transform
        self.max_pixels, self.target_size = max_pixels, target_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, position: int):
        try:
            image = open_image(self.paths[position], self.max_pixels, self.target_size)
            return position, self.transform(image), None
        except DecodeError as exc:
            return position, None, str(exc)
        except Exception as exc:  # the transform itself failed on a strange image
            return position, None, f"cannot preprocess image: {type(exc).__name__}: {exc}"


def _collate(samples) -> DecodedBatch:
    ok = [(p, t) for p, t, err in samples if err is None]
    failures = [(p, err) for p, _, err in samples if err is not None]
    pixels = torch.stack([t for _, t in ok]) if ok else torch.zeros(0)
    return DecodedBatch([p for p, _ in ok], pixels, failures)


READ_AHEAD_BYTES = 96 * 2**20  # decoded pixels the workers may hold ready (bounded: memory stays flat)
SHARED_MEMORY = "/dev/shm"  # where torch passes worker batches to the main process on Linux


def shared_memory_free() -> int | None:
    """Free bytes in /dev/shm (None where there is no such mount). Containers often give it 64 MB."""
    try:
        stats = os.statvfs(SHARED_MEMORY)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def read_ahead_batches(batch_size: int, workers: int, target_size: int | None) -> int:
    """Batches each worker may decode ahead: about READ_AHEAD_BYTES of uint8 crops in all, at least 2.

    Deep enough that decoding started before the model has loaded keeps the encoder fed for a while
    (see indexer.pipeline), shallow enough that a large model input size cannot fill the memory, and
    never more than a quarter of the free shared memory (batches wait there; a container's small
    /dev/shm would otherwise make the workers fail)."""
    budget = READ_AHEAD_BYTES
    free = shared_memory_free()
    if free is not None:
        budget = min(budget, free // 4)
    per_batch = batch_size * 3 * (target_size or 224) ** 2
    return max(2, budget // max(1, per_batch * max(1, workers)))


def decode_batches(
    paths: Sequence[str],
    transform: Callable,
    *,
    batch_size: int = 32,
    workers: int = 1,
    max_pixels: int = 90_000_000,
    target_size: int | None = None,
    pin_memory: bool = False,
) -> Iterator[DecodedBatch]:
    """Decoded, preprocessed batches in order. The ``workers`` processes start at once (not at the first
    ``next``) and decode ahead, so a caller can start this before loading its model."""
    if not paths:
        return iter(())
    loader = DataLoader(
        _ImageFiles(paths, transform, max_pixels, target_size),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        prefetch_factor=read_ahead_batches(batch_size, workers, target_size) if workers else None,
        pin_memory=pin_memory,
        timeout=600 if workers else 0,  # a worker stuck on one file longer than this fails the run loudly
    )
    return iter(loader)
