"""Photo metadata as typed fields: capture time, camera, lens, exposure, GPS, pixel size, album, and the
keywords and titles that Lightroom, digiKam or a phone wrote (XMP, IPTC).

Read in the decode workers from the file's header, which Pillow has parsed anyway to open it, so it
costs a fraction of a millisecond beside the decode (see bench/README.md, "photo metadata"). Every
field is optional: a picture without EXIF still gets its size, its album and a capture time taken from
the file's modification time (``taken_source: "mtime"``).

Field names and types (all in the item's ``meta``, so the filters, sorting and facets use them as is):

=================  ======  ==========================================================================
``taken``          text    ISO-8601 local time of capture, with the UTC offset when the camera wrote one
                           (``2023-06-01T14:05:09+01:00``); else the file's mtime in this machine's zone
``taken_source``   text    ``exif`` or ``mtime``
``camera``         text    make and model, normalised: ``Google Pixel 7``, ``Nikon D850``, ``Canon EOS R5``
``camera_make``    text    ``Google``, ``Nikon``, ``Canon``
``camera_model``   text    the model without the make: ``Pixel 7``, ``D850``, ``EOS R5``
``lens``           text    lens model
``focal_length``   number  millimetres
``aperture``       number  f-number
``iso``            number
``exposure``       number  seconds (1/250 s is 0.004)
``gps_lat``,       number  degrees (south and west negative), metres above sea level
``gps_lon``,
``gps_alt``
``width``,         number  pixels of the full picture, upright
``height``
``album``          text    the folder the file is in
``title``,         text    XMP dc:title / IPTC object name, XMP dc:description / IPTC caption
``description``
``tags``           list    XMP dc:subject and lr:hierarchicalSubject leaves, IPTC keywords
=================  ======  ==========================================================================

Place names (``city``, ``region``, ``country``) are added from the GPS position by
``mmsearch.imaging.places`` in the indexing process (one lookup table, loaded once).
"""

from __future__ import annotations

import logging
import math
import os
import re
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from typing import Any

from PIL import Image

log = logging.getLogger(__name__)

# every field this module (and places.py) may set: what an index run owns in an image item's meta
PHOTO_FIELDS = frozenset({
    "taken", "taken_source", "camera", "camera_make", "camera_model", "lens", "focal_length", "aperture", "iso",
    "exposure", "gps_lat", "gps_lon", "gps_alt", "width", "height", "album", "title", "description", "tags",
    "city", "region", "country",
})
MAX_XMP_BYTES = 256 * 1024  # a larger packet is not a photo's keywords; skip it rather than parse it
MAX_TAGS = 100
MAX_TEXT = 2000

# EXIF tags
_IFD_EXIF, _IFD_GPS = 0x8769, 0x8825
_MAKE, _MODEL, _DATETIME, _ORIENTATION = 0x010F, 0x0110, 0x0132, 0x0112
_DATETIME_ORIGINAL, _DATETIME_DIGITIZED = 0x9003, 0x9004
_OFFSET_ORIGINAL, _OFFSET_DIGITIZED, _OFFSET = 0x9011, 0x9012, 0x9010
_EXPOSURE, _FNUMBER, _ISO, _FOCAL, _LENS_MODEL, _LENS_MAKE = 0x829A, 0x829D, 0x8827, 0x920A, 0xA434, 0xA433
_PIXEL_X, _PIXEL_Y = 0xA002, 0xA003

_MAKES = {  # what cameras write -> the name people use
    "nikon corporation": "Nikon", "nikon": "Nikon", "canon": "Canon", "sony": "Sony", "fujifilm": "Fujifilm",
    "olympus imaging corp.": "Olympus", "olympus corporation": "Olympus", "olympus": "Olympus",
    "om digital solutions": "OM System", "panasonic": "Panasonic", "samsung": "Samsung", "apple": "Apple",
    "google": "Google", "huawei": "Huawei", "xiaomi": "Xiaomi", "oneplus": "OnePlus", "lge": "LG",
    "lg electronics": "LG", "motorola": "Motorola", "ricoh imaging company, ltd.": "Ricoh", "ricoh": "Ricoh",
    "pentax corporation": "Pentax", "pentax": "Pentax", "eastman kodak company": "Kodak", "kodak": "Kodak",
    "leica camera ag": "Leica", "leica": "Leica", "hasselblad": "Hasselblad", "dji": "DJI", "gopro": "GoPro",
    "sigma": "Sigma", "minolta co., ltd.": "Minolta", "konica minolta": "Konica Minolta", "nokia": "Nokia",
    "hmd global": "Nokia", "oppo": "OPPO", "vivo": "vivo", "realme": "realme", "asus": "ASUS", "htc": "HTC",
}
_COMPANY_WORDS = re.compile(r"[\s,]+(corporation|corp\.?|co\.,?\s*ltd\.?|ltd\.?|inc\.?|imaging|company|camera ag|ag)$", re.I)


def photo_fields(im: Image.Image, path: "str | os.PathLike[str] | None", mtime: float | None = None) -> dict[str, Any]:
    """The photo fields of an opened (not yet loaded or drafted) picture. Never raises: a damaged
    header gives fewer fields, not a failed file."""
    fields: dict[str, Any] = {}
    exif = header_exif(im)
    fields.update(exif_fields(exif))
    width, height = im.size
    if _orientation(exif) in (5, 6, 7, 8):
        width, height = height, width
    fields["width"], fields["height"] = width, height
    fields.update(_text_fields(im))
    finish(fields, path, mtime)
    return fields


def header_exif(im: Image.Image) -> Image.Exif:
    """The EXIF Pillow found while opening, never decoding pixels for it: a PNG's eXIf chunk may follow
    its image data, and Pillow's PNG getexif() decodes the whole image to reach it (a 100,000-pixel-wide
    bomb would be decoded before the pixel cap could refuse it). Such a late chunk is left unread."""
    if im.format == "PNG" and "exif" not in im.info:
        return Image.Exif()
    try:
        return im.getexif()
    except Exception as exc:  # Pillow raises assorted types on malformed EXIF
        log.debug("unreadable EXIF: %s", exc)
        return Image.Exif()


def finish(fields: dict[str, Any], path: "str | os.PathLike[str] | None", mtime: float | None) -> dict[str, Any]:
    """Add what comes from the file rather than its content: the album, and the capture time from the
    file's mtime when the picture has none."""
    if path is not None:
        fields["album"] = album_of(path)
    if "taken" not in fields:
        if mtime is None and path is not None:
            try:
                mtime = os.stat(path).st_mtime
            except OSError:
                mtime = None
        if mtime is not None:
            fields["taken"] = datetime.fromtimestamp(mtime).astimezone().isoformat(timespec="seconds")
            fields["taken_source"] = "mtime"
    return fields


def album_of(path: "str | os.PathLike[str]") -> str:
    """The folder a file is in (its name, not the whole path): how photo libraries name albums."""
    return os.path.basename(os.path.dirname(os.path.abspath(os.fspath(path)))) or "/"


def exif_fields(exif: Image.Exif) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    try:
        sub = exif.get_ifd(_IFD_EXIF)
    except Exception:
        sub = {}
    try:
        gps = exif.get_ifd(_IFD_GPS)
    except Exception:
        gps = {}
    taken = _capture_time(exif, sub)
    if taken:
        fields["taken"], fields["taken_source"] = taken, "exif"
    fields.update(camera_fields(_text(exif.get(_MAKE)), _text(exif.get(_MODEL))))
    lens = _text(sub.get(_LENS_MODEL))
    if lens:
        fields["lens"] = lens
    for key, tag in (("focal_length", _FOCAL), ("aperture", _FNUMBER), ("exposure", _EXPOSURE)):
        value = _number(sub.get(tag))
        if value is not None and value > 0:
            fields[key] = round(value, 6)
    iso = _number(_first(sub.get(_ISO)))
    if iso is not None and iso > 0:
        fields["iso"] = int(iso)
    fields.update(gps_fields(gps))
    return fields


def camera_fields(make: str | None, model: str | None) -> dict[str, Any]:
    """``camera``, ``camera_make``, ``camera_model`` from what the camera wrote: the maker's name as people
    say it (NIKON CORPORATION -> Nikon), the model without a repeated maker (NIKON D850 -> D850)."""
    fields: dict[str, Any] = {}
    make_name = normalise_make(make) if make else None
    model_name = (model or "").strip() or None
    if model_name:
        for prefix in {p for p in ((make or "").strip(), make_name or "", (make or "").split(" ")[0]) if p}:
            if model_name.lower().startswith(prefix.lower() + " "):
                model_name = model_name[len(prefix):].strip()
                break
    if make_name:
        fields["camera_make"] = make_name
    if model_name:
        fields["camera_model"] = model_name
    name = " ".join(p for p in (make_name, model_name) if p)
    if name:
        fields["camera"] = name
    return fields


def normalise_make(make: str) -> str:
    key = " ".join(make.split()).lower()
    if key in _MAKES:
        return _MAKES[key]
    stripped = _COMPANY_WORDS.sub("", " ".join(make.split())).strip()
    if stripped.lower() in _MAKES:
        return _MAKES[stripped.lower()]
    return stripped.title() if stripped.isupper() and len(stripped) > 3 else stripped


def _capture_time(exif: Image.Exif, sub) -> str | None:
    for tag, offset_tag in ((_DATETIME_ORIGINAL, _OFFSET_ORIGINAL), (_DATETIME_DIGITIZED, _OFFSET_DIGITIZED)):
        text = iso_datetime(_text(sub.get(tag)), _text(sub.get(offset_tag)) or _text(sub.get(_OFFSET)))
        if text:
            return text
    return iso_datetime(_text(exif.get(_DATETIME)), _text(sub.get(_OFFSET)))


_EXIF_TIME = re.compile(r"^(\d{4})[:\-](\d{2})[:\-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET_TEXT = re.compile(r"^([+-])(\d{2}):?(\d{2})$")


def iso_datetime(value: str | None, offset: str | None = None) -> str | None:
    """EXIF ``2023:06:01 14:05:09`` (+ ``+01:00``) -> ``2023-06-01T14:05:09+01:00``; None when unusable
    (blank, all zeros, impossible dates)."""
    if not value:
        return None
    m = _EXIF_TIME.match(value.strip())
    if not m:
        return None
    try:
        moment = datetime(*(int(g) for g in m.groups()))
    except ValueError:
        return None
    if moment.year < 1826:  # before the first photograph: a camera clock that was never set
        return None
    o = _OFFSET_TEXT.match((offset or "").strip())
    if o:
        delta = timedelta(hours=int(o.group(2)), minutes=int(o.group(3)))
        if delta <= timedelta(hours=14):
            moment = moment.replace(tzinfo=timezone(delta if o.group(1) == "+" else -delta))
    return moment.isoformat(timespec="seconds")


def gps_fields(gps) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    lat, lon = _degrees(gps.get(2), gps.get(1)), _degrees(gps.get(4), gps.get(3))
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180) or (lat == 0 and lon == 0):
        return fields
    fields["gps_lat"], fields["gps_lon"] = round(lat, 7), round(lon, 7)
    alt = _number(gps.get(6))
    if alt is not None and math.isfinite(alt):
        below = gps.get(5) in (1, b"\x01", "\x01")
        fields["gps_alt"] = round(-alt if below else alt, 2)
    return fields


def _degrees(value, ref) -> float | None:
    try:
        parts = [float(v) for v in value]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not parts or not all(math.isfinite(p) for p in parts):
        return None
    deg = parts[0] + (parts[1] / 60 if len(parts) > 1 else 0) + (parts[2] / 3600 if len(parts) > 2 else 0)
    ref = _text(ref) or ""
    return -deg if ref.upper().startswith(("S", "W")) else deg


def _orientation(exif: Image.Exif) -> int:
    try:
        return int(exif.get(_ORIENTATION, 1))
    except (TypeError, ValueError):
        return 1


def _first(value):
    return value[0] if isinstance(value, (tuple, list)) and value else value


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) else None


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.split(b"\0", 1)[0].decode("utf-8", "replace")
    text = " ".join(str(value).replace("\0", " ").split())
    return text[:MAX_TEXT] or None


# --- XMP and IPTC: keywords, titles, descriptions ---
_NS = {
    "x": "adobe:ns:meta/", "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#", "dc": "http://purl.org/dc/elements/1.1/",
    "lr": "http://ns.adobe.com/lightroom/1.0/", "exif": "http://ns.adobe.com/exif/1.0/",
    "xmp": "http://ns.adobe.com/xap/1.0/", "photoshop": "http://ns.adobe.com/photoshop/1.0/",
}


def _text_fields(im: Image.Image) -> dict[str, Any]:
    """Title, description and tags from XMP (preferred) and IPTC."""
    title, description, tags = None, None, []
    xmp = xmp_packet(im)
    if xmp:
        parsed = parse_xmp(xmp)
        title, description, tags = parsed.get("title"), parsed.get("description"), list(parsed.get("tags", []))
    iptc = _iptc(im)
    title = title or iptc.get("title")
    description = description or iptc.get("description")
    tags += iptc.get("tags", [])
    fields: dict[str, Any] = {}
    if title:
        fields["title"] = title
    if description:
        fields["description"] = description
    unique = list(dict.fromkeys(t for t in tags if t))[:MAX_TAGS]
    if unique:
        fields["tags"] = unique
    return fields


def xmp_packet(im: Image.Image) -> bytes | None:
    """The raw XMP packet Pillow found while opening (JPEG APP1, PNG iTXt, WebP, TIFF, HEIF)."""
    info = im.info
    for key in ("xmp", "XML:com.adobe.xmp"):
        value = info.get(key)
        if value:
            return value.encode("utf-8") if isinstance(value, str) else bytes(value)
    tiff_tags = getattr(im, "tag_v2", None)
    if tiff_tags is not None and 700 in tiff_tags:
        value = tiff_tags[700]
        return value if isinstance(value, bytes) else str(value).encode("utf-8")
    return None


def parse_xmp(packet: bytes) -> dict[str, Any]:
    """{title, description, tags} from an XMP packet; {} when it is too large or not XML."""
    if len(packet) > MAX_XMP_BYTES or b"<!ENTITY" in packet or b"<!DOCTYPE" in packet:
        return {}  # entity tricks have no place in XMP: refuse rather than expand
    start = packet.find(b"<x:xmpmeta")
    if start < 0:
        start = packet.find(b"<rdf:RDF")
    end_tag = b"</x:xmpmeta>" if packet[start:start + 10] == b"<x:xmpmeta" else b"</rdf:RDF>"
    end = packet.find(end_tag)
    if start < 0 or end < 0:
        return {}
    try:
        root = ET.fromstring(packet[start:end + len(end_tag)])
    except ET.ParseError as exc:
        log.debug("unreadable XMP: %s", exc)
        return {}
    result: dict[str, Any] = {}
    for key, name in (("title", "dc:title"), ("description", "dc:description")):
        values = _xmp_values(root, name)
        if values:
            result[key] = values[0]
    tags = _xmp_values(root, "dc:subject")
    for path in _xmp_values(root, "lr:hierarchicalSubject"):
        leaf = path.split("|")[-1].strip()
        if leaf:
            tags.append(leaf)
    if tags:
        result["tags"] = tags
    return result


def _xmp_values(root: ET.Element, name: str) -> list[str]:
    """A property's values, whether written as an element (Bag/Seq/Alt of rdf:li, or plain text) or as
    an attribute of rdf:Description."""
    prefix, local = name.split(":")
    qualified = f"{{{_NS[prefix]}}}{local}"
    values: list[str] = []
    for desc in root.iter(f"{{{_NS['rdf']}}}Description"):
        if qualified in desc.attrib:
            values.append(desc.attrib[qualified])
    for element in root.iter(qualified):
        items = list(element.iter(f"{{{_NS['rdf']}}}li"))
        if items:
            values.extend(li.text or "" for li in items)
        elif element.text and element.text.strip():
            values.append(element.text)
    return [t for t in (_text(v) for v in values) if t]


def _iptc(im: Image.Image) -> dict[str, Any]:
    has_block = (im.format == "JPEG" and any(marker == "APP13" for marker, _ in getattr(im, "applist", ()))) or (
        im.format == "TIFF" and 33723 in getattr(im, "tag_v2", {}))
    if not has_block:  # most photos have none: skip the parser
        return {}
    try:
        from PIL import IptcImagePlugin

        info = IptcImagePlugin.getiptcinfo(im) or {}
    except Exception as exc:
        log.debug("unreadable IPTC: %s", exc)
        return {}

    def texts(key) -> list[str]:
        value = info.get(key)
        values = value if isinstance(value, list) else [value] if value is not None else []
        return [t for t in (_text(v) for v in values) if t]

    result: dict[str, Any] = {}
    title, caption, keywords = texts((2, 5)), texts((2, 120)), texts((2, 25))
    if title:
        result["title"] = title[0]
    if caption:
        result["description"] = caption[0]
    if keywords:
        result["tags"] = keywords
    return result


def raw_fields(facts, path: "str | os.PathLike[str] | None", mtime: float | None = None) -> dict[str, Any]:
    """Photo fields of a camera RAW file from what LibRaw and the file's EXIF header say."""
    fields: dict[str, Any] = exif_fields(facts.exif) if facts.exif is not None else {}
    if "taken" not in fields and facts.timestamp is not None:
        fields["taken"], fields["taken_source"] = facts.timestamp.replace(microsecond=0).isoformat(), "exif"
    for key in ("iso", "exposure", "aperture", "focal_length", "lens"):
        value = getattr(facts, key)
        if key not in fields and value:
            fields[key] = int(value) if key == "iso" else round(value, 6) if isinstance(value, float) else value
    fields["width"], fields["height"] = facts.width, facts.height
    return finish(fields, path, mtime)


def read_photo_fields(path: "str | os.PathLike[str]", mtime: float | None = None) -> dict[str, Any]:
    """The photo fields of a file from its header alone (no pixels decoded): for items indexed before
    these fields existed. {} when the file cannot be opened."""
    from mmsearch.imaging.formats import is_raw_name, register_plugins
    from mmsearch.imaging.raw import NotRawError, RawDecodeError, read_raw_facts

    register_plugins()
    if is_raw_name(path):
        try:
            return raw_fields(read_raw_facts(path), path, mtime)
        except (NotRawError, RawDecodeError):
            pass  # an ordinary image with a RAW name, or unreadable: tried by content below
    try:
        with Image.open(os.fspath(path)) as im:
            return photo_fields(im, path, mtime)
    except Exception as exc:  # unreadable now: the next full decode reports it
        log.debug("no photo fields for %s: %s", path, exc)
        return {}
