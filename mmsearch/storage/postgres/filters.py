"""Metadata filters in PostgreSQL's SQL (JSONB operators): the same semantics as the SQLite JSON1 SQL
of ``mmsearch.storage.filters``, which documents them. Numbers compare as numbers and only match numbers,
texts compare exactly and order bytewise (``COLLATE "C"``, as SQLite does), a list matches when any
element does, and ``ne``/``nin`` also match items without the field.

Casts sit inside ``CASE`` branches so a number cast is only ever applied to a JSON number (the order in
which PostgreSQL evaluates ``AND`` operands is not defined).
"""

from __future__ import annotations

from typing import Any

from mmsearch.storage.filters import COLUMN_FIELDS, Condition, Params, compared


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


def condition_sql(cond: Condition, params: Params) -> str:
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
