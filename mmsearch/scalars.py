"""One rule for what a scalar written as text means, shared by ingest (CSV/JSONL catalogue cells) and by
queries (values in ``--where`` filters and the API's filter object), so the two always agree on types."""

from __future__ import annotations

import re
from typing import Any

_NUMBER = re.compile(r"^[+-]?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$")


def coerce_scalar(value: Any) -> Any:
    """A CSV cell as the value a user means: '79.5' -> 79.5, '3' -> 3, '00123' stays text (an identifier).

    Used both at ingest and for values in ``--where`` filters, so the two always agree on types.
    """
    if not isinstance(value, str):
        return value
    stripped = value.strip()
    if _NUMBER.match(stripped):
        number = float(stripped)
        if number.is_integer() and "." not in stripped and "e" not in stripped.lower():
            return int(stripped)
        return number
    return stripped
