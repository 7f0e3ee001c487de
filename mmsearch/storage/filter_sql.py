"""Filters (``mmsearch.storage.filters``) compiled to SQL: the SQLite JSON1 conditions here, the
PostgreSQL JSONB ones in ``mmsearch.storage.postgres.filters``, and the one entry point that picks
between them (``candidate_sql``), so neither dialect module imports the other or this one."""

from __future__ import annotations

from typing import Any, Iterable

from mmsearch.geo import bounding_box
from mmsearch.storage.filters import COLUMN_FIELDS, NEAR, Condition, Params, aliased, compared, json_path, product_sql
from mmsearch.storage.postgres.filters import condition_sql as postgres_condition_sql


def _type_check(value: Any, type_expr: str | None) -> str:
    if type_expr is None:
        return ""
    return f"{type_expr} IN ('integer', 'real') AND " if isinstance(value, (int, float)) else f"{type_expr} = 'text' AND "


def _predicate(cond: Condition, params: Params, column: str, type_expr: str | None) -> str:
    """``compared`` against one value expression (``type_expr`` is its JSON type, to keep numbers and
    texts apart; None for plain columns)."""

    def compare(value: Any, op: str) -> str:
        if isinstance(value, bool):  # a JSON boolean (json_type 'true'/'false'), or the text "true"/"false"
            word = "true" if value else "false"
            if type_expr is None:
                return f"{column} = {params.add(word)}"
            return f"({type_expr} = '{word}' OR ({type_expr} = 'text' AND {column} = {params.add(word)}))"
        return f"{_type_check(value, type_expr)}{column} {op} {params.add(value)}"

    return compared(cond, compare)


DISTANCE_FUNCTION = "mmsearch_km"  # haversine in km, registered on every SQLite connection (storage.store)
_LAT, _LON = "json_extract(items.meta, '$.gps_lat')", "json_extract(items.meta, '$.gps_lon')"


def _near_sql(cond: Condition, params: Params) -> str:
    """Within ``km`` of a point: numeric gps_lat/gps_lon, inside the bounding box (cheap), then the exact
    great-circle distance (SQLite evaluates these left to right and stops at the first false)."""
    lat, lon, km = cond.value
    low, high, lons = bounding_box(lat, lon, km)
    typed = ("json_type(items.meta, '$.gps_lat') IN ('integer', 'real') AND "
             "json_type(items.meta, '$.gps_lon') IN ('integer', 'real')")
    box = f"{_LAT} BETWEEN {params.add(low)} AND {params.add(high)}"
    if lons:
        box += " AND (" + " OR ".join(f"{_LON} BETWEEN {params.add(w)} AND {params.add(e)}" for w, e in lons) + ")"
    distance = f"{DISTANCE_FUNCTION}({_LAT}, {_LON}, {params.add(lat)}, {params.add(lon)})"
    return f"coalesce({typed} AND {box} AND {distance} <= {params.add(km)}, 0)"


def _condition_sql(cond: Condition, params: Params) -> str:
    if cond.op == NEAR:
        return _near_sql(cond, params)
    if cond.op == "exists":
        if cond.field in COLUMN_FIELDS:
            return "1" if cond.value else "0"
        path = params.add(json_path(cond.field))
        present = f"coalesce(json_type(items.meta, {path}), 'null') != 'null'"
        return present if cond.value else f"NOT ({present})"
    if cond.field in COLUMN_FIELDS:
        sql = _predicate(cond, params, COLUMN_FIELDS[cond.field], None)
    else:
        path = params.add(json_path(cond.field))
        json_type, value = f"json_type(items.meta, {path})", f"json_extract(items.meta, {path})"
        any_element = f"EXISTS (SELECT 1 FROM json_each(items.meta, {path}) WHERE {_predicate(cond, params, 'value', 'type')})"
        scalar = _predicate(cond, params, value, json_type)
        # a scalar is tested directly (fast); a list matches when any element does; a missing field never matches
        sql = f"coalesce(CASE WHEN {json_type} = 'array' THEN {any_element} ELSE ({scalar}) END, 0)"
    return f"NOT ({sql})" if cond.op in ("ne", "nin") else sql


def candidate_sql(conditions: list[Condition], modalities: Iterable[str], dialect: str = "sqlite") -> tuple[str, dict]:
    """-> (``SELECT id FROM items WHERE ...``, bound parameters): the ids of items of these modalities
    that satisfy every condition, in the SQL of ``dialect`` (``sqlite`` or ``postgresql``)."""
    params = Params()
    names = ", ".join(params.add(m) for m in modalities)
    if dialect == "postgresql":
        condition_sql = postgres_condition_sql
    else:
        condition_sql = _condition_sql
    clauses = [f"items.modality IN ({names})"] + [_with_aliases(c, condition_sql, params) for c in conditions]
    return "SELECT items.id FROM items WHERE " + " AND ".join(clauses), params.values


def _with_aliases(cond: Condition, condition_sql, params: Params) -> str:
    """A condition on an aliased field (``camera``) tests each field it stands for."""
    parts, joiner = aliased(cond)
    if not joiner:
        return condition_sql(cond, params)
    return "(" + f" {joiner} ".join(condition_sql(c, params) for c in parts) + ")"


def create_filter_indexes(conn) -> None:
    """Migration ``003_product_index``: an index on the ``product`` link (SKU), used to find a product's
    items (its picture for a text hit, grouping) without scanning every row."""
    from sqlalchemy import text

    conn.execute(text(f"CREATE INDEX IF NOT EXISTS ix_items_product ON items ({product_sql(conn.dialect.name)})"))
