"""What the model-making tools (``python -m mmsearch.train.<tool>``) share at their start: parsed
arguments with INFO logging on, and the mmsearch-lite weights file they work on."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def parse_tool_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The tool's arguments; its progress and tables are logged at INFO with timestamps."""
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return args


def tool_weights(given: Path | None) -> Path:
    """``--weights`` when given, else the shipped file; an install without one is a clear stop."""
    from mmsearch.encoders.lite_files import shipped_weights

    weights = given or shipped_weights()
    if weights is None:
        raise SystemExit("no mmsearch-lite weights: pass --weights (this install ships none)")
    return weights
