"""A small photo library of real files for the photo tests: phones and cameras, four places and photos
without a position, dates over three years with and without UTC offsets, every readable format."""

from __future__ import annotations

import random
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from PIL import Image

from dngfile import write_dng
from photofiles import LISBON, PORTO, SAN_FRANCISCO, SYDNEY, Shot, write_avif, write_heic, write_jpeg

PLACES = {"Lisbon": LISBON, "Porto": PORTO, "San Francisco": SAN_FRANCISCO, "Sydney": SYDNEY}
CAMERAS = [("Google", "Pixel 7"), ("Apple", "iPhone 13"), ("NIKON CORPORATION", "NIKON D850"), ("Canon", "Canon EOS R5")]
COUNTRY = {"Lisbon": "Portugal", "Porto": "Portugal", "San Francisco": "United States", "Sydney": "Australia"}


@dataclass
class Photo:
    path: Path
    city: str | None
    camera: str | None  # the normalised name mmsearch should give
    taken: str | None  # ISO, as mmsearch should store it


def _jitter(rng: random.Random, position: tuple[float, float]) -> tuple[float, float]:
    """Somewhere within ~1.5 km of the place."""
    return position[0] + rng.uniform(-0.01, 0.01), position[1] + rng.uniform(-0.01, 0.01)


def build_library(root: Path, n: int = 36, seed: int = 7) -> list[Photo]:
    """``n`` JPEG/HEIC/AVIF photos in album folders (one per place, plus "misc"), deterministic."""
    rng = random.Random(seed)
    photos = []
    for i in range(n):
        city = rng.choice(list(PLACES) + [None])
        make, model = CAMERAS[i % len(CAMERAS)] if i % 5 else (None, None)
        year, month, day = 2021 + i % 3, 1 + (i * 5) % 12, 1 + (i * 7) % 28
        offset = "+01:00" if i % 2 else None
        shot = Shot(make=make, model=model, taken=f"{year}:{month:02d}:{day:02d} {i % 24:02d}:15:00", offset=offset,
                    gps=_jitter(rng, PLACES[city]) if city else None, iso=100 + i, exposure=Fraction(1, 100 + i),
                    tags=["holiday", f"roll{i % 4}"] if i % 3 == 0 else [], title=f"Frame {i}" if i % 4 == 0 else None)
        folder = root / (city or "misc")
        folder.mkdir(parents=True, exist_ok=True)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        writer, ext = [(write_jpeg, "jpg"), (write_jpeg, "jpeg"), (write_heic, "heic"), (write_avif, "avif")][i % 4]
        path = writer(folder / f"img{i:03d}.{ext}", shot, size=(80 + i, 60), colour=colour)
        camera = None
        if make:
            camera = {"NIKON CORPORATION": "Nikon D850", "Canon": "Canon EOS R5"}.get(make, f"{make} {model}")
        taken = f"{year}-{month:02d}-{day:02d}T{i % 24:02d}:15:00" + (offset or "")
        photos.append(Photo(path, city, camera, taken))
    return photos


def pattern(seed: int) -> Image.Image:
    rng = random.Random(seed)
    im = Image.new("RGB", (4, 3))
    im.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(12)])
    return im.resize((40, 30), Image.NEAREST)


def add_other_formats(root: Path) -> dict[str, Path]:
    """Animated GIF and WebP, a multi-page TIFF, a DNG with and without a preview, a photo without EXIF."""
    folder = root / "formats"
    folder.mkdir(parents=True, exist_ok=True)
    files = {"gif": folder / "anim.gif", "webp": folder / "anim.webp", "tiff": folder / "pages.tiff"}
    for (kind, path), seed in zip(files.items(), (1, 2, 3)):  # each its own pictures: no duplicates
        frames = [pattern(seed), pattern(seed + 10)]
        extra = {"duration": 40, "loop": 0} if kind != "tiff" else {}
        frames[0].save(path, save_all=True, append_images=frames[1:], **extra)
    files["dng"] = write_dng(folder / "sensor.dng", 64, 48)
    files["dng_preview"] = write_dng(folder / "camera.dng", 600, 400, preview=(300, 200), make="NIKON CORPORATION", model="NIKON Z 6")
    files["plain"] = folder / "plain.png"
    Image.new("RGB", (30, 20), "green").save(files["plain"])
    return files
