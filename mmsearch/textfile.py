"""Reading a text file as an item's text: shared by the indexer's scan and by ``mmsearch verify --repair``
(which re-reads files to re-embed them), so both read the same bytes the same way."""

from __future__ import annotations

MAX_TEXT_BYTES = 256 * 1024  # text beyond this adds nothing to an embedding and only costs memory


def read_text_file(path: str) -> str:
    """Read up to MAX_TEXT_BYTES; bytes that are not UTF-8 are replaced rather than failing the file."""
    with open(path, "rb") as fh:
        data = fh.read(MAX_TEXT_BYTES)
    return data.decode("utf-8", errors="replace").strip()
