"""Metadata filters in PostgreSQL's SQL (JSONB operators): the same semantics as the SQLite JSON1 SQL
of ``mmsearch.storage.filters``, which documents them. Numbers compare as numbers and only match numbers,
texts compare exactly and order bytewise (``COLLATE "C"``, as SQLite does), a list matches when any
element does, and ``ne``/``nin`` also match items without the field.

Casts sit inside ``CASE`` branches so a number cast is only ever applied to a JSON number (the order in
which PostgreSQL evaluates ``AND`` operands is not defined).
"""

from __future__ import annotations

from typing import Any

from mmsearch.geo import EARTH_RADIUS_KM, bounding_box
from mmsearch.storage.filters import COLUMN_FIELDS, NEAR, Condition, Params, compared


def _json_compare(expr: str, params: Params):
    """``compare(value, op)`` for a JSONB value expression."""

    def compare(value: Any, op: str) -> str:
        if isinstance(value, bool):  # a JSON boolean, or the text "true"/"false"
            return f"jsonb_typeof({expr}) IN ('boolean', 'string') AND ({expr} #>> '{{}}') = {params.add('true' if value else 'false')}"
        if isinstance(value, (int, float)):
            return f"CASE WHEN jsonb_typeof({expr}) = 'number' THEN ({expr})::numeric {op} {params.add(value)} ELSE false END"
        return f"jsonb_typeof({expr}) = 'string' AND ({expr} #>> '{{}}') COLLATE \"C\" {op} {params.add(value)}"

    return compare


def _column_compare(column: str, params: Params):
    return lambda value, op: f"{column} {op} CAST({params.add(value)} AS text)"


def _number(key: str) -> str:
    expr = f"(items.meta -> '{key}')"
    return f"(CASE WHEN jsonb_typeof({expr}) = 'number' THEN ({expr})::float8 END)"


def _near_sql(cond: Condition, params: Params) -> str:
    """Within ``km`` of a point: the bounding box, then the haversine distance (mmsearch.geo's formula)."""
    lat, lon, km = cond.value
    low, high, lons = bounding_box(lat, lon, km)
    la, lo = _number("gps_lat"), _number("gps_lon")
    p_lat, p_lon = f"CAST({params.add(lat)} AS float8)", f"CAST({params.add(lon)} AS float8)"
    box = f"{la} BETWEEN {params.add(low)} AND {params.add(high)}"
    if lons:
        box += " AND (" + " OR ".join(f"{lo} BETWEEN {params.add(w)} AND {params.add(e)}" for w, e in lons) + ")"
    distance = (f"2 * {EARTH_RADIUS_KM} * asin(least(1.0, sqrt(power(sin(radians({la} - {p_lat}) / 2), 2) + "
                f"cos(radians({p_lat})) * cos(radians({la})) * power(sin(radians({lo} - {p_lon}) / 2), 2))))")
    return f"coalesce({box} AND {distance} <= {params.add(km)}, false)"


def condition_sql(cond: Condition, params: Params) -> str:
    if cond.op == NEAR:
        return _near_sql(cond, params)
    if cond.op == "exists":
        if cond.field in COLUMN_FIELDS:
            return "true" if cond.value else "false"
        present = f"coalesce(jsonb_typeof(items.meta -> {params.add(cond.field)}), 'null') <> 'null'"
        return present if cond.value else f"NOT ({present})"
    if cond.field in COLUMN_FIELDS:
        sql = compared(cond, _column_compare(COLUMN_FIELDS[cond.field], params))
    else:
        value = f"(items.meta -> {params.add(cond.field)})"
        any_element = (f"EXISTS (SELECT 1 FROM jsonb_array_elements({value}) AS e(v) "
                       f"WHERE {compared(cond, _json_compare('e.v', params))})")
        scalar = compared(cond, _json_compare(value, params))
        # a list matches when any element does; a missing field never matches
        sql = f"coalesce(CASE WHEN jsonb_typeof({value}) = 'array' THEN {any_element} ELSE ({scalar}) END, false)"
    return f"NOT ({sql})" if cond.op in ("ne", "nin") else sql
