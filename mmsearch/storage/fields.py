"""What metadata fields an index holds, with their values or ranges: what the search page offers as
filters, and what a client can ask ``GET /v1/fields`` before building a filter object."""

from __future__ import annotations

import re
import threading

from sqlalchemy import text as sql

from mmsearch.storage.store import Store

# bookkeeping, not product fields; the text read in images is searched by keyword, not offered as a filter
HIDDEN = ("manifest", "role", "ocr_text")
MAX_VALUES = 50  # a text field with more distinct values than this lists none (titles, descriptions, SKUs)
_cache: dict[str, tuple[int, list[dict]]] = {}
_cache_lock = threading.Lock()
_UNIT = "coalesce(json_extract(items.meta, '$.product'), 'item:' || items.id)"  # count products, not their items
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
MAX_MONTH_BUCKETS = 120  # a longer span is counted by year


def field_summary(store: Store) -> list[dict]:
    """-> [{name, type: number|text|boolean, count, distinct, min, max, values: [{value, count}] | None,
    histogram: [{bucket, count}] | None}] sorted by name; ``count`` is how many products (or stand-alone
    items) have the field; ``histogram`` counts a date field (ISO-8601 texts, e.g. a photo's ``taken``) per
    month (``2023-06``), or per year (``2023``) when it spans more than ten years."""
    hidden = ", ".join(f"'{h}'" for h in HIDDEN)
    with store.engine.connect() as conn:
        if store.dialect == "postgresql":
            from mmsearch.storage.postgres import fields as fields_pg

            rows, text_values, histogram = fields_pg.summary_rows(conn, hidden), fields_pg.text_values, fields_pg.date_histogram
        else:
            rows, text_values, histogram = _summary_rows(conn, hidden), _text_values, _date_histogram
        fields = []
        for name, kind, count, distinct, low, high in rows:
            entry = {"name": name, "type": kind, "count": int(count), "distinct": int(distinct), "min": low, "max": high,
                     "values": None, "histogram": None}
            if kind == "text" and _is_date(low) and _is_date(high):
                entry["histogram"] = histogram(conn, name, bucket_chars(low, high))
            if kind == "text" and distinct <= MAX_VALUES:
                entry["values"] = text_values(conn, name)
            elif kind == "boolean":
                entry["values"] = [{"value": False, "count": None}, {"value": True, "count": None}]
            fields.append(entry)
    return fields


def _summary_rows(conn, hidden: str) -> list:
    """-> [(name, kind, products with it, distinct values, min, max)] by name then kind."""
    return conn.execute(sql(
        f"SELECT j.key, CASE WHEN j.type IN ('integer', 'real') THEN 'number' WHEN j.type IN ('true', 'false') THEN 'boolean' ELSE j.type END AS kind, "
        f"count(DISTINCT {_UNIT}), count(DISTINCT j.value), min(j.value), max(j.value) "
        f"FROM items, json_each(items.meta) AS j WHERE j.type NOT IN ('null', 'object', 'array') AND j.key NOT IN ({hidden}) "
        "GROUP BY j.key, kind ORDER BY j.key, kind"
    )).all()


def _is_date(value) -> bool:
    return isinstance(value, str) and bool(_DATE.match(value))


def bucket_chars(low: str, high: str) -> int:
    """How many leading characters of an ISO date name its bucket: 7 (month) or 4 (year)."""
    months = (int(high[:4]) - int(low[:4])) * 12 + int(high[5:7]) - int(low[5:7])
    return 7 if months < MAX_MONTH_BUCKETS else 4


def _date_histogram(conn, name: str, chars: int) -> list[dict]:
    rows = conn.execute(sql(
        f"SELECT substr(j.value, 1, {int(chars)}) AS bucket, count(DISTINCT {_UNIT}) FROM items, json_each(items.meta) AS j "
        "WHERE j.key = :key AND j.type = 'text' AND j.value GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]*' GROUP BY bucket ORDER BY bucket"
    ), {"key": name})
    return [{"bucket": bucket, "count": int(n)} for bucket, n in rows]


def cached_field_summary(store: Store) -> list[dict]:
    """``field_summary``, computed once per store generation (it reads every item's metadata)."""
    generation = store.generation()
    with _cache_lock:
        hit = _cache.get(store.url)
        if hit and hit[0] == generation:
            return hit[1]
    summary = field_summary(store)
    with _cache_lock:
        _cache[store.url] = (generation, summary)
    return summary


def _text_values(conn, name: str) -> list[dict]:
    rows = conn.execute(sql(
        f"SELECT j.value, count(DISTINCT {_UNIT}) AS n FROM items, json_each(items.meta) AS j "
        "WHERE j.key = :key AND j.type = 'text' GROUP BY j.value ORDER BY n DESC, j.value"
    ), {"key": name})
    return [{"value": value, "count": int(n)} for value, n in rows]


def product_count(store: Store) -> int:
    if store.dialect == "postgresql":
        from mmsearch.storage.postgres.fields import UNIT as unit
    else:
        unit = _UNIT
    with store.engine.connect() as conn:
        return int(conn.execute(sql(f"SELECT count(DISTINCT {unit}) FROM items")).scalar() or 0)
