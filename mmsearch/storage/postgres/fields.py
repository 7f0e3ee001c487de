"""The field summary of ``mmsearch.storage.fields`` in PostgreSQL's SQL (JSONB): the same rows, in the same
order, with the same Python types (numbers come back as int or float, not Decimal)."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import text as sql

from mmsearch.storage.filters import product_sql

UNIT = f"coalesce({product_sql('postgresql')}, 'item:' || items.id)"  # count products, not their items
_KIND = "CASE jsonb_typeof(j.value) WHEN 'number' THEN 'number' WHEN 'boolean' THEN 'boolean' ELSE 'text' END"
# min/max of numbers (booleans as 0/1, as SQLite reports them) and of texts (bytewise, as SQLite orders)
_NUMBER = "CASE jsonb_typeof(j.value) WHEN 'number' THEN (j.value)::numeric WHEN 'boolean' THEN (j.value)::boolean::int END"
_TEXT = "CASE WHEN jsonb_typeof(j.value) = 'string' THEN (j.value #>> '{}') COLLATE \"C\" END"


def _plain(value):
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and value.as_tuple().exponent >= 0 else float(value)
    return value


def summary_rows(conn, hidden: str) -> list[tuple]:
    """-> [(name, kind, products with it, distinct values, min, max)] by name then kind."""
    rows = conn.execute(sql(
        f"SELECT j.key, {_KIND} AS kind, count(DISTINCT {UNIT}), count(DISTINCT j.value), "
        f"min({_NUMBER}), max({_NUMBER}), min({_TEXT}), max({_TEXT}) "
        f"FROM items, jsonb_each(items.meta) AS j WHERE jsonb_typeof(j.value) IN ('number', 'string', 'boolean') "
        f"AND j.key NOT IN ({hidden}) GROUP BY j.key, kind ORDER BY j.key COLLATE \"C\", kind"
    )).all()
    return [(name, kind, count, distinct, _plain(low if kind != "text" else low_text), _plain(high if kind != "text" else high_text))
            for name, kind, count, distinct, low, high, low_text, high_text in rows]


def text_values(conn, name: str) -> list[dict]:
    value = "(j.value #>> '{}')"
    rows = conn.execute(sql(
        f"SELECT {value}, count(DISTINCT {UNIT}) AS n FROM items, jsonb_each(items.meta) AS j "
        f"WHERE j.key = :key AND jsonb_typeof(j.value) = 'string' GROUP BY {value} ORDER BY n DESC, {value} COLLATE \"C\""
    ), {"key": name})
    return [{"value": v, "count": int(n)} for v, n in rows]


def date_histogram(conn, name: str, chars: int) -> list[dict]:
    """Products per date bucket (the first ``chars`` characters of an ISO date), as the SQLite version."""
    value = "(j.value #>> '{}')"
    rows = conn.execute(sql(
        f"SELECT left({value}, {int(chars)}) AS bucket, count(DISTINCT {UNIT}) FROM items, jsonb_each(items.meta) AS j "
        f"WHERE j.key = :key AND jsonb_typeof(j.value) = 'string' AND {value} ~ '^[0-9]{{4}}-[0-9]{{2}}' "
        "GROUP BY 1 ORDER BY 1"  # buckets are digits and dashes: every collation orders them alike
    ), {"key": name})
    return [{"bucket": b, "count": int(n)} for b, n in rows]
