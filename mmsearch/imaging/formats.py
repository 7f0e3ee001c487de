"""Which image files mmsearch reads, and how: one place for the scanner's list of image extensions, the
formats a search-by-image upload may be, and the extra readers (HEIC/HEIF through pillow-heif, camera
RAW through rawpy).

Pillow decides a file's format from its content; only camera RAW is chosen by extension, because most RAW
formats are TIFF underneath and Pillow would otherwise open them as the tiny thumbnail in their first
directory. A RAW-named file that LibRaw cannot read is then tried by content like any other file.
"""

from __future__ import annotations

import os
import threading

# Read by Pillow itself (animated GIF/WebP and multi-page TIFF: the first frame/page).
PILLOW_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif"})
# HEIC/HEIF (phones), read by the pillow-heif plugin.
HEIF_SUFFIXES = frozenset({".heic", ".heif", ".hif", ".heics", ".heifs"})
# Camera RAW, read by rawpy (LibRaw): the embedded preview when large enough, else a half-size demosaic.
RAW_SUFFIXES = frozenset({
    ".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf", ".orf", ".rw2", ".pef",
    ".srw", ".x3f", ".3fr", ".iiq", ".erf", ".kdc", ".mef", ".mos", ".mrw", ".rwl",
})
IMAGE_SUFFIXES = PILLOW_SUFFIXES | HEIF_SUFFIXES | RAW_SUFFIXES

# Formats an untrusted upload may be (Pillow format ids): the raster formats people search with,
# including HEIF (what phones send) and AVIF. Anything else is refused whatever the file is called:
# EPS (runs Ghostscript), PSD, exotic plugins, and camera RAW (tens of MB, and LibRaw's many parsers are
# more attack surface than a search box needs; index RAW files instead).
UPLOAD_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF")

_registered = False
_lock = threading.Lock()


def register_plugins() -> None:
    """Teach Pillow to open HEIC/HEIF (once per process). Decoding stays single-threaded: decode workers
    are separate processes, one per core, so libheif's own threads would only oversubscribe them."""
    global _registered
    if _registered:
        return
    with _lock:
        if _registered:
            return
        from pillow_heif import register_heif_opener

        register_heif_opener(decode_threads=1, thumbnails=True)
        _registered = True


def is_raw_name(path: "str | os.PathLike[str]") -> bool:
    """Whether a file name says camera RAW (the one case where the name, not the content, picks the reader)."""
    return os.path.splitext(os.fspath(path))[1].lower() in RAW_SUFFIXES
