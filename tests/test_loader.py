"""Image decoding: orientation, transparency, odd modes, and broken files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from indexer.loader import decode_batches
from mmsearch.imaging.decode import DecodeError, open_image


def test_exif_rotation_is_applied(tmp_path):
    im = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    path = tmp_path / "rot.jpg"
    im.save(path, exif=exif)
    assert open_image(str(path)).size == (20, 40)


def test_transparency_composited_on_white(tmp_path):
    path = tmp_path / "t.png"
    Image.new("RGBA", (10, 10), (255, 0, 0, 0)).save(path)
    assert open_image(str(path)).getpixel((5, 5)) == (255, 255, 255)
    pal = Image.new("P", (10, 10), 0)
    pal.putpalette([0, 0, 0] * 256)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png", transparency=0)
    assert open_image(str(tmp_path / "p.png")).getpixel((1, 1)) == (255, 255, 255)


def test_sixteen_bit_and_cmyk(tmp_path):
    arr = np.full((8, 8), 40000, dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "g16.png")
    px = open_image(str(tmp_path / "g16.png")).getpixel((0, 0))
    assert 150 < px[0] < 160 and px[0] == px[1] == px[2]
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    r, g, b = open_image(str(tmp_path / "c.jpg")).getpixel((4, 4))
    assert r > 200 and g < 60 and b < 60


def test_pixel_cap_refuses_bombs(tmp_path):
    Image.new("L", (3000, 3000)).save(tmp_path / "big.png")
    with pytest.raises(DecodeError, match="above the cap"):
        open_image(str(tmp_path / "big.png"), max_pixels=1_000_000)


def test_broken_inputs_raise_decode_error(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "blue").save(buf, format="JPEG")
    (tmp_path / "trunc.jpg").write_bytes(buf.getvalue()[:300])
    (tmp_path / "html.png").write_bytes(b"<html></html>")
    (tmp_path / "zero.jpg").write_bytes(b"")
    for name in ("trunc.jpg", "html.png", "zero.jpg"):
        with pytest.raises(DecodeError):
            open_image(str(tmp_path / name))


def test_batches_keep_positions_when_files_fail(tmp_path):
    paths = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        if i in (1, 3):
            path.write_bytes(b"broken")
        else:
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(path)
        paths.append(str(path))

    def transform(im):
        import torch

        return torch.tensor(np.asarray(im, dtype=np.float32)[0, 0, 0]).reshape(1, 1, 1)

    batches = list(decode_batches(paths, transform, batch_size=2, workers=1))
    positions = [p for b in batches for p in b.positions]
    failures = [p for b in batches for p, _ in b.failures]
    values = [float(v) for b in batches for v in b.pixels.flatten()]
    assert positions == [0, 2, 4] and failures == [1, 3]
    assert values == [0.0, 80.0, 160.0]  # each tensor is the one of its own position


def test_read_ahead_stays_within_a_small_shared_memory(monkeypatch):
    """Workers park decoded batches in /dev/shm; a container's 64 MB must not be overrun by reading ahead."""
    import indexer.loader as loader

    monkeypatch.setattr(loader, "shared_memory_free", lambda: 64 * 2**20)
    small = loader.read_ahead_batches(batch_size=32, workers=1, target_size=224)
    assert 2 <= small and small * 32 * 3 * 224 * 224 <= 16 * 2**20
    monkeypatch.setattr(loader, "shared_memory_free", lambda: 1 * 2**20)
    assert loader.read_ahead_batches(batch_size=32, workers=1, target_size=224) == 2  # never below the usual depth
    monkeypatch.setattr(loader, "shared_memory_free", lambda: 24 * 2**30)
    roomy = loader.read_ahead_batches(batch_size=32, workers=1, target_size=224)
    assert roomy > small and roomy * 32 * 3 * 224 * 224 <= loader.READ_AHEAD_BYTES
    assert loader.read_ahead_batches(batch_size=32, workers=2, target_size=448) < roomy  # bytes, not batches, are bounded
