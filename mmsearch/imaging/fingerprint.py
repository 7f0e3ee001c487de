"""Visual fingerprints: what tells "the same picture" (a copy resized, recompressed, cropped a little,
colour-shifted, EXIF stripped) from "a similar picture".

The search embeddings cannot do this on their own: they say what a picture shows, so two different
photos of one subject can score higher than a photo and its edited copy (with mmsearch-lite on the
benchmark's photos: copies 0.48-0.97 cosine, unrelated photos up to 0.91). A fingerprint instead
describes the picture's layout of light and dark:

* **fingerprint** - each channel of the picture in YCbCr (brightness and two colour differences) at
  32x32, its 2-D DCT, the 61 coefficients of the lowest frequencies without the mean and the two
  gradients (a global ramp is what unrelated photos share most); the three concatenated (183 numbers)
  and L2-normalised together, so colour counts as much as the picture has of it (a black-and-white
  photo is compared on brightness alone). Inner product = similarity, so FAISS finds candidate pairs
  by k-NN. Brightness, contrast and small colour shifts, resizing and JPEG artefacts barely move it;
  brightness alone let different photos of the benchmark's style reach 0.97, colour takes them to 0.83.
* **crop variants** - the same vector of 19 windows of the picture: the whole, and 95 % and 90 %
  windows at 9 positions each. The similarity of two pictures is the best match of one's whole frame
  against the other's windows, in both directions, so a copy cropped by up to ~10 % matches its
  original at ~0.99 while different pictures stay below ~0.9 (benchmark: bench/duplicates.py).

Pictures are decoded at reduced scale (JPEG draft mode), upright (EXIF orientation applied).
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable

import numpy as np
from PIL import Image
from scipy.fft import dctn

log = logging.getLogger(__name__)

SIDE = 32  # the picture is compared at this many pixels a side
FREQUENCIES = 8  # DCT coefficients kept per axis (lowest frequencies)
_DIAGONALS = np.add.outer(np.arange(FREQUENCIES), np.arange(FREQUENCIES))
_KEEP = _DIAGONALS >= 2  # drop the mean (0,0) and the two gradients (0,1), (1,0)
CHANNELS = 3  # Y, Cb, Cr
DIM = CHANNELS * int(_KEEP.sum())  # 3 x 61
DECODE_SIZE = 256  # JPEGs decode at the smallest DCT scale at least this large: 8x less work for photos
WINDOWS = tuple(
    (scale, fx, fy)
    for scale in (1.0, 0.95, 0.9)
    for fx in ((0.0,) if scale == 1.0 else (0.0, 0.5, 1.0))
    for fy in ((0.0,) if scale == 1.0 else (0.0, 0.5, 1.0))
)


def _vector(channels: tuple[Image.Image, ...], box: tuple[float, float, float, float]) -> np.ndarray:
    parts = []
    for channel in channels:
        pixels = np.asarray(channel.resize((SIDE, SIDE), Image.BOX, box=box), dtype=np.float32)
        parts.append(dctn(pixels, norm="ortho")[:FREQUENCIES, :FREQUENCIES][_KEEP])
    vector = np.concatenate(parts)
    return (vector / max(float(np.linalg.norm(vector)), 1e-6)).astype(np.float32)


def _window_box(size: tuple[int, int], window: tuple[float, float, float]) -> tuple[float, float, float, float]:
    (width, height), (scale, fx, fy) = size, window
    left, top = (1 - scale) * width * fx, (1 - scale) * height * fy
    return left, top, left + scale * width, top + scale * height


def _channels(image: Image.Image) -> tuple[Image.Image, ...]:
    return (image if image.mode == "YCbCr" else image.convert("YCbCr")).split()


def fingerprint(image: Image.Image) -> np.ndarray:
    """The whole picture's fingerprint, float32 [DIM], unit length."""
    channels = _channels(image)
    return _vector(channels, _window_box(image.size, WINDOWS[0]))


def crop_variants(image: Image.Image) -> np.ndarray:
    """Fingerprints of every window of WINDOWS, float32 [len(WINDOWS), DIM]; row 0 is the whole picture."""
    channels = _channels(image)
    return np.stack([_vector(channels, _window_box(image.size, window)) for window in WINDOWS])


def visual_similarity(variants_a: np.ndarray, variants_b: np.ndarray) -> float:
    """How well one picture's whole frame matches a window of the other (either way round), in [-1, 1]."""
    return float(max((variants_a @ variants_b[0]).max(), (variants_b @ variants_a[0]).max()))


def open_for_fingerprint(path: str, max_pixels: int) -> Image.Image:
    """The picture at reduced scale, upright, in YCbCr. Raises DecodeError/OSError like open_image."""
    from mmsearch.imaging.decode import open_image

    return open_image(path, max_pixels, target_size=DECODE_SIZE).convert("YCbCr")


def of_files(paths: Iterable[str], describe: Callable[[Image.Image], np.ndarray], max_pixels: int,
             threads: int = 2) -> dict[str, np.ndarray | None]:
    """``describe`` (fingerprint or crop_variants) of each file, None for a file that cannot be decoded
    any more; decoded on ``threads`` threads (Pillow's decoders release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(path: str) -> np.ndarray | None:
        try:
            return describe(open_for_fingerprint(path, max_pixels))
        except Exception as exc:  # gone, unreadable or no longer an image: a duplicate of nothing
            log.debug("no fingerprint for %s: %s", path, exc)
            return None

    paths = list(paths)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        return dict(zip(paths, pool.map(one, paths)))


class FingerprintCache:
    """Fingerprints already computed, by the file content's sha256 (so a moved or renamed file keeps
    its own, and an edited one gets a new one), in one ``.npz`` file beside the index: the whole-picture
    fingerprint of every picture, and the crop variants of the pictures that were once in a candidate
    pair (float16: ~2.3 KB each), so a second run decodes only new files. Written to a temporary name
    and renamed: a reader sees the old cache or the new one. A cache that cannot be read or written
    only costs decoding time."""

    KINDS = {"prints": (DIM,), "variants": (len(WINDOWS), DIM)}

    def __init__(self, path) -> None:
        from pathlib import Path

        self.path = Path(path)
        self.entries: dict[str, dict[str, np.ndarray]] = {kind: {} for kind in self.KINDS}
        self.changed = False
        try:
            with np.load(self.path, allow_pickle=False) as data:
                for kind, shape in self.KINDS.items():
                    if data[f"{kind}_values"].shape[1:] == shape:
                        self.entries[kind] = dict(zip(data[f"{kind}_keys"].tolist(), data[f"{kind}_values"]))
        except FileNotFoundError:
            pass
        except Exception as exc:  # damaged or of another layout: start again
            log.warning("ignoring unreadable fingerprint cache %s: %s", self.path, exc)

    def get(self, kind: str, sha256: str) -> np.ndarray | None:
        value = self.entries[kind].get(sha256)
        if value is None:
            return None
        value = value.astype(np.float32)  # stored as float16: unit length again, so a copy still scores 1.0
        return value / np.maximum(np.linalg.norm(value, axis=-1, keepdims=True), 1e-6)

    def put(self, kind: str, sha256: str, value: np.ndarray) -> None:
        self.entries[kind][sha256] = value.astype(np.float16 if kind == "variants" else np.float32)
        self.changed = True

    def save(self, keep: set[str]) -> None:
        """Write the entries of ``keep`` (the contents still indexed), if anything changed."""
        import os

        stale = any(set(entries) - keep for entries in self.entries.values())
        if not (self.changed or stale):
            return
        arrays = {}
        for kind, shape in self.KINDS.items():
            keys = sorted(set(self.entries[kind]) & keep)
            arrays[f"{kind}_keys"] = np.array(keys, dtype="U64")
            arrays[f"{kind}_values"] = np.stack([self.entries[kind][k] for k in keys]) if keys else np.zeros((0, *shape), np.float32)
        tmp = self.path.with_name(self.path.name + ".tmp.npz")
        try:
            np.savez(tmp, **arrays)
            os.replace(tmp, self.path)
            self.changed = False
        except OSError as exc:  # a read-only index directory: fingerprints are recomputed next time
            log.warning("cannot save the fingerprint cache %s: %s", self.path, exc)
