"""mmsearch: cross-modal (image <-> text) search over a folder or a catalogue."""

__version__ = "0.1.0"
