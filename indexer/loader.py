"""Decode and preprocess images in DataLoader worker processes.

A file that cannot be decoded yields a failure record carrying its position in the batch list, so the
caller drops exactly that item: metadata can never slide onto a neighbour's vector.

With an OCR budget the workers also read the text in each image (``mmsearch.imaging.ocr``), from the
full-size decode, so OCR overlaps with embedding; without one the OCR engine is never imported.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from mmsearch.imaging.decode import DecodeError, open_image

if TYPE_CHECKING:
    from mmsearch.imaging.ocr import OcrBudget, OcrResult


@dataclass
class DecodedBatch:
    positions: list[int]  # positions (in the caller's list) of the images in `pixels`, in order
    pixels: torch.Tensor  # [len(positions), 3, H, W]
    failures: list[tuple[int, str]]  # (position, reason)
    ocr: dict[int, "OcrResult"] = field(default_factory=dict)  # position -> text read (with an OCR budget)
    ocr_failures: list[tuple[int, str]] = field(default_factory=list)  # (position, why OCR failed): image kept
    meta: list[dict] = field(default_factory=list)  # photo fields of each image in ``positions``, in order


class _ImageFiles(Dataset):
    def __init__(self, paths: Sequence[str], transform: Callable, max_pixels: int, target_size: int | None,
                 ocr: "OcrBudget | None" = None) -> None:
        self.paths, self.transform = list(paths), transform
        self.max_pixels, self.target_size, self.ocr = max_pixels, target_size, ocr

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, position: int):
        meta: dict = {}  # photo fields, read here from the header the decode parses anyway
        try:
            # OCR needs every pixel: no reduced-scale JPEG decoding then
            image = open_image(self.paths[position], self.max_pixels, None if self.ocr else self.target_size, meta=meta)
            pixels = self.transform(image)
        except DecodeError as exc:
            return position, None, str(exc), None, None
        except Exception as exc:  # the transform itself failed on a strange image
            return position, None, f"cannot preprocess image: {type(exc).__name__}: {exc}", None, None
        return position, pixels, None, self._read_text(image) if self.ocr else None, meta

    def _read_text(self, image) -> "OcrResult | str":
        """The image's text, or why it could not be read (the image is indexed either way)."""
        from mmsearch.imaging.ocr import OcrUnavailableError, read_text

        try:
            return read_text(image, self.ocr)
        except OcrUnavailableError:
            raise  # the engine cannot run at all: fail the run rather than skip every image's text
        except Exception as exc:  # one strange image must not stop the run
            return f"OCR failed: {type(exc).__name__}: {exc}"


def _collate(samples) -> DecodedBatch:
    ok = [(p, t, meta) for p, t, err, _, meta in samples if err is None]
    failures = [(p, err) for p, _, err, _, _ in samples if err is not None]
    pixels = torch.stack([t for _, t, _ in ok]) if ok else torch.zeros(0)
    texts = {p: text for p, _, err, text, _ in samples if err is None and text is not None and not isinstance(text, str)}
    ocr_failures = [(p, text) for p, _, err, text, _ in samples if err is None and isinstance(text, str)]
    return DecodedBatch([p for p, _, _ in ok], pixels, failures, texts, ocr_failures, [meta for _, _, meta in ok])


def _single_threaded_worker(_worker_id: int) -> None:
    """A decode worker is one process per core: native decoders loaded in it (LibRaw's OpenMP demosaic)
    run one thread, which also keeps OpenMP in a forked process from ever waiting on the parent's pool."""
    os.environ["OMP_NUM_THREADS"] = "1"
    warnings.filterwarnings("ignore", message="rawpy is being used in a process created by multiprocessing")


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
    ocr: "OcrBudget | None" = None,
) -> Iterator[DecodedBatch]:
    """Decoded, preprocessed batches in order. The ``workers`` processes start at once (not at the first
    ``next``) and decode ahead, so a caller can start this before loading its model. With ``ocr`` (a
    per-image budget) each batch also carries the text read in its images."""
    if not paths:
        return iter(())
    # a worker stuck on one batch longer than this fails the run loudly; OCR may spend its budget per image
    timeout = 600 + (batch_size * ocr.seconds if ocr else 0)
    loader = DataLoader(
        _ImageFiles(paths, transform, max_pixels, target_size, ocr),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        prefetch_factor=read_ahead_batches(batch_size, workers, target_size) if workers else None,
        pin_memory=pin_memory,
        timeout=timeout if workers else 0,
        worker_init_fn=_single_threaded_worker if workers else None,
    )
    return iter(loader)
