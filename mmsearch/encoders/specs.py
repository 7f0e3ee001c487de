"""Model spec strings (``ARCH:PRETRAINED``, ``mmsearch-lite[:WEIGHTS]``) and the weights file a
``mmsearch-lite`` spec stands for: read by the registry and by the int8 graph's chooser alike, so
neither imports the other (and neither needs torch for it)."""

from __future__ import annotations

from pathlib import Path

from mmsearch.encoders.lite_files import BRIDGE_WEIGHTS, LITE_NAME, VARIANTS, WEIGHTS_DIR, shipped_weights
from mmsearch.errors import ModelNotFoundError


def split_spec(spec: str) -> tuple[str, str | None]:
    """'ARCH:PRETRAINED' -> (ARCH, PRETRAINED); schema specs (hf-hub:, local-dir:) stay whole."""
    if spec.startswith(("hf-hub:", "local-dir:")):
        return spec, None
    arch, sep, pretrained = spec.partition(":")
    return arch, (pretrained if sep else None)


def lite_weights_path(weights: str | None) -> Path | None:
    """The weights file a ``mmsearch-lite[:PATH|:VARIANT]`` spec names (None: the shipped default)."""
    if not weights:
        return None
    if weights in VARIANTS:
        shipped = WEIGHTS_DIR / VARIANTS[weights]
        if not shipped.is_file():
            raise ModelNotFoundError(f"{LITE_NAME}:{weights} is not shipped with this install ({shipped} is missing)")
        return shipped
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ModelNotFoundError(f"weights file {path} does not exist")
    return path


def lite_weights(weights: str | None) -> Path | None:
    """The weights file a ``mmsearch-lite[:WEIGHTS]`` spec stands for: the named file, else the shipped
    one; None for the bridge alone (``:bridge``, or an install without shipped weights)."""
    if weights == BRIDGE_WEIGHTS:
        return None
    return lite_weights_path(weights) or shipped_weights()
