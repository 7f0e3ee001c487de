"""What reading photo fields costs the decode workers: decoding photo-sized JPEGs (1000x750, EXIF with GPS
and an XMP packet, as phones write them) at the model's input size, with and without reading their photo
fields, alternating in one process; plus the place-name lookup per photo and the place table's load.

    python -m bench.photo_meta --size smoke|full [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

from PIL import Image, TiffImagePlugin

from bench.common import emit_json, machine, print_table
from bench.photos import make_photo

SIZES = {"smoke": (40, 3), "full": (400, 5)}  # photos, alternating rounds
TARGET = 224


def _exif(seed: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Google", "Pixel 7"
    sub = exif.get_ifd(0x8769)
    sub[0x9003], sub[0x9011], sub[0x829A] = f"2023:06:{1 + seed % 28:02d} 14:05:09", "+01:00", TiffImagePlugin.IFDRational(1, 250)
    gps = exif.get_ifd(0x8825)
    lat, lon = 38.7 + (seed % 50) / 1000, -9.14 + (seed % 30) / 1000
    gps[1], gps[2] = "N", tuple(TiffImagePlugin.IFDRational(Fraction(v).limit_denominator(10_000)) for v in (int(lat), int(lat % 1 * 60), 0))
    gps[3], gps[4] = "W", tuple(TiffImagePlugin.IFDRational(Fraction(v).limit_denominator(10_000)) for v in (int(-lon), int(-lon % 1 * 60), 0))
    return exif


def _xmp(seed: int) -> bytes:
    return ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:subject><rdf:Bag>'
            f'<rdf:li>holiday</rdf:li><rdf:li>roll{seed % 7}</rdf:li></rdf:Bag></dc:subject></rdf:Description></rdf:RDF></x:xmpmeta>').encode()


def _write(folder: Path, n: int) -> list[str]:
    paths = []
    for seed in range(n):
        path = folder / f"p{seed:04d}.jpg"
        make_photo(seed).save(path, format="JPEG", quality=88, exif=_exif(seed), xmp=_xmp(seed))
        paths.append(str(path))
    return paths


def _decode_ms(paths: list[str], with_fields: bool) -> float:
    from mmsearch.imaging.decode import open_image

    start = time.perf_counter()
    for path in paths:
        open_image(path, target_size=TARGET, meta={} if with_fields else None)
    return (time.perf_counter() - start) * 1000 / len(paths)


def run(size: str) -> dict:
    from mmsearch.imaging import places
    from mmsearch.imaging.photometa import read_photo_fields

    n, rounds = SIZES[size]
    with tempfile.TemporaryDirectory() as tmp:
        paths = _write(Path(tmp), n)
        _decode_ms(paths, True)  # warm the page cache and the plugins
        plain, fields = [], []
        for _ in range(rounds):
            plain.append(_decode_ms(paths, False))
            fields.append(_decode_ms(paths, True))
        metas = [read_photo_fields(p) for p in paths]
    start = time.perf_counter()
    places._table = None
    places.place_table()
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    places.add_place_names(metas)
    lookup_ms = (time.perf_counter() - start) * 1000 / n
    plain_ms, fields_ms = statistics.median(plain), statistics.median(fields)
    result = {
        "photos": n, "rounds": rounds, "target_size": TARGET, "machine": machine(),
        "decode_ms_per_photo": round(plain_ms, 3), "decode_with_fields_ms_per_photo": round(fields_ms, 3),
        "fields_overhead_ms": round(fields_ms - plain_ms, 3), "ratio": round(fields_ms / plain_ms, 3),
        "place_lookup_ms_per_photo": round(lookup_ms, 3), "place_table_load_s": round(load_s, 3),
        "places_found": sum(1 for m in metas if m.get("city")),
    }
    print_table(f"photo fields in the decode workers ({n} photos 1000x750, {rounds} alternating rounds, median)", [
        ("decode + photo fields, ms/photo", result["decode_with_fields_ms_per_photo"], f"decode alone {result['decode_ms_per_photo']}", result["ratio"]),
        ("place names, ms/photo (batched)", result["place_lookup_ms_per_photo"], "-", "-"),
        ("place table load, s (once per run)", result["place_table_load_s"], "-", "-"),
    ], ("figure", "value", "same-run baseline", "ratio"))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=tuple(SIZES), default="smoke")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    emit_json(run(args.size), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
