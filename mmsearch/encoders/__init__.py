"""Encoders: one protocol, an open_clip-backed implementation, a registry of named models."""

from mmsearch.encoders.base import Encoder, l2_normalise
from mmsearch.encoders.registry import TEST_MODEL, load_encoder

__all__ = ["Encoder", "l2_normalise", "load_encoder", "TEST_MODEL"]
