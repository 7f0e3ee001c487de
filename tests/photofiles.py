"""Real photo files for the photo-library tests, written on the fly: JPEGs with EXIF (camera, capture
time with offset, exposure, GPS) and XMP keywords written by Pillow, HEIC through pillow-heif, AVIF
through Pillow, animated GIF/WebP, a multi-page TIFF, and a DNG (tests/dngfile.py)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from PIL import Image, TiffImagePlugin

LISBON = (38.7107, -9.1386)  # Rossio, central Lisbon
PORTO = (41.1496, -8.6109)
SAN_FRANCISCO = (37.7793, -122.4193)
SYDNEY = (-33.8688, 151.2093)

_IFD_EXIF, _IFD_GPS = 0x8769, 0x8825


@dataclass
class Shot:
    """What a test photo says about itself."""

    make: str | None = None
    model: str | None = None
    taken: str | None = None  # EXIF form: "2023:06:01 14:05:09"
    offset: str | None = None  # "+01:00"
    gps: tuple[float, float] | None = None
    altitude: float | None = None
    lens: str | None = None
    iso: int | None = None
    exposure: Fraction | None = None
    focal_length: float | None = None
    orientation: int | None = None
    tags: list[str] = field(default_factory=list)
    title: str | None = None


def _rational(value: float) -> TiffImagePlugin.IFDRational:
    fraction = Fraction(value).limit_denominator(1_000_000)
    return TiffImagePlugin.IFDRational(fraction.numerator, fraction.denominator)


def _dms(value: float) -> tuple:
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = (value - degrees - minutes / 60) * 3600
    return (_rational(degrees), _rational(minutes), _rational(round(seconds, 4)))


def exif_of(shot: Shot) -> Image.Exif:
    exif = Image.Exif()
    if shot.make:
        exif[0x010F] = shot.make
    if shot.model:
        exif[0x0110] = shot.model
    if shot.orientation:
        exif[0x0112] = shot.orientation
    sub = exif.get_ifd(_IFD_EXIF)
    if shot.taken:
        sub[0x9003] = shot.taken
    if shot.offset:
        sub[0x9011] = shot.offset
    if shot.lens:
        sub[0xA434] = shot.lens
    if shot.iso:
        sub[0x8827] = shot.iso
    if shot.exposure:
        sub[0x829A] = TiffImagePlugin.IFDRational(shot.exposure.numerator, shot.exposure.denominator)
    if shot.focal_length:
        sub[0x920A] = _rational(shot.focal_length)
    if shot.gps:
        lat, lon = shot.gps
        gps = exif.get_ifd(_IFD_GPS)
        gps[1], gps[2] = ("N" if lat >= 0 else "S"), _dms(lat)
        gps[3], gps[4] = ("E" if lon >= 0 else "W"), _dms(lon)
        if shot.altitude is not None:
            gps[5], gps[6] = (b"\x00" if shot.altitude >= 0 else b"\x01"), _rational(abs(shot.altitude))
    return exif


def xmp_packet(tags: list[str], title: str | None = None, hierarchical: list[str] = ()) -> bytes:
    """An XMP packet as Lightroom writes it: dc:subject bag, dc:title alt, lr:hierarchicalSubject."""
    subject = "".join(f"<rdf:li>{t}</rdf:li>" for t in tags)
    hier = "".join(f"<rdf:li>{t}</rdf:li>" for t in hierarchical)
    title_xml = f'<dc:title><rdf:Alt><rdf:li xml:lang="x-default">{title}</rdf:li></rdf:Alt></dc:title>' if title else ""
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:lr="http://ns.adobe.com/lightroom/1.0/">'
        f"<dc:subject><rdf:Bag>{subject}</rdf:Bag></dc:subject>{title_xml}"
        + (f"<lr:hierarchicalSubject><rdf:Bag>{hier}</rdf:Bag></lr:hierarchicalSubject>" if hier else "")
        + '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode("utf-8")


def picture(size=(96, 64), colour=(200, 60, 40)) -> Image.Image:
    im = Image.new("RGB", size, colour)
    im.paste(Image.new("RGB", (size[0] // 2, size[1]), tuple(255 - c for c in colour)), (size[0] // 2, 0))
    return im


def write_jpeg(path: Path, shot: Shot, size=(96, 64), colour=(200, 60, 40)) -> Path:
    kwargs = {"exif": exif_of(shot), "quality": 90}
    if shot.tags or shot.title:
        kwargs["xmp"] = xmp_packet(shot.tags, shot.title)
    picture(size, colour).save(path, format="JPEG", **kwargs)
    return path


def write_heic(path: Path, shot: Shot, size=(96, 64), colour=(30, 160, 90)) -> Path:
    from pillow_heif import register_heif_opener

    register_heif_opener()
    kwargs = {"exif": exif_of(shot).tobytes(), "quality": 90}
    if shot.tags or shot.title:
        kwargs["xmp"] = xmp_packet(shot.tags, shot.title)
    picture(size, colour).save(path, format="HEIF", **kwargs)
    return path


def write_avif(path: Path, shot: Shot, size=(96, 64), colour=(40, 90, 200)) -> Path:
    kwargs = {"exif": exif_of(shot).tobytes(), "quality": 90}
    if shot.tags or shot.title:
        kwargs["xmp"] = xmp_packet(shot.tags, shot.title)
    picture(size, colour).save(path, format="AVIF", **kwargs)
    return path


def heic_bytes(size=(64, 48), colour=(30, 160, 90)) -> bytes:
    from pillow_heif import register_heif_opener

    register_heif_opener()
    buf = io.BytesIO()
    picture(size, colour).save(buf, format="HEIF", quality=90)
    return buf.getvalue()


def avif_bytes(size=(64, 48), colour=(40, 90, 200)) -> bytes:
    buf = io.BytesIO()
    picture(size, colour).save(buf, format="AVIF", quality=90)
    return buf.getvalue()


def multipage_tiff_bytes(size=(47, 29), colours=("red", "blue", "lime")) -> bytes:
    pages = [Image.new("RGB", size, c) for c in colours]
    buf = io.BytesIO()
    pages[0].save(buf, format="TIFF", save_all=True, append_images=pages[1:])
    return buf.getvalue()


def iptc_jpeg_bytes(keywords: list[str], title: str, size=(20, 10)) -> bytes:
    """A JPEG with an IPTC block (APP13, Photoshop 3.0 resource 0x0404) as older tools write keywords."""

    def record(dataset: int, data: bytes) -> bytes:
        return bytes([0x1C, 2, dataset]) + len(data).to_bytes(2, "big") + data

    block = b"".join(record(25, k.encode()) for k in keywords) + record(5, title.encode())
    resource = b"8BIM" + (0x0404).to_bytes(2, "big") + b"\0\0" + len(block).to_bytes(4, "big") + block + b"\0" * (len(block) % 2)
    app13 = b"Photoshop 3.0\0" + resource
    buf = io.BytesIO()
    Image.new("RGB", size, "grey").save(buf, format="JPEG")
    data = buf.getvalue()
    return data[:2] + b"\xff\xed" + (len(app13) + 2).to_bytes(2, "big") + app13 + data[2:]
