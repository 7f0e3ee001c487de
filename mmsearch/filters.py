"""Exact metadata filters: equality, membership, numeric and date ranges, presence, on any field.

A filter is a list of conditions that must all hold. It is compiled to SQL over the JSON metadata
column (SQLite JSON1; PostgreSQL JSONB in ``mmsearch.filters_pg``), so the set of matching item ids is resolved in the database and the vector and
keyword searches run *inside* that set: a filtered-out item is never returned, and k results come back
whenever k items match.

Two spellings of the same thing:

* CLI ``--where``: ``brand = Acme``, ``brand != Acme``, ``price <= 80``, ``price between 10 and 80``,
  ``category in [bags, shoes]``, ``category not in [hats]``, ``released >= 2024-01-01``,
  ``colour exists``, ``colour not exists``;
* API JSON object: ``{"brand": "Acme", "category": {"in": ["bags", "shoes"]}, "price": {"gte": 10, "lte": 80}}``.

Semantics (both spellings): numbers compare as numbers and only match numeric values; text compares
exactly (case-sensitive), and ranges over text compare lexicographically, which orders ISO-8601 dates
correctly; a list-valued field matches when any element does; ``ne``/``nin`` also match items that lack
the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from indexer.catalogue import coerce_scalar
from mmsearch.errors import InvalidQueryError

OPS = ("eq", "ne", "in", "nin", "gt", "gte", "lt", "lte", "exists")
_RANGE_SQL = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_FIELD = re.compile(r"^[A-Za-z_][\w.\- ]{0,63}$")
COLUMN_FIELDS = {"modality": "items.modality"}  # fields that are item columns rather than metadata
MAX_VALUES = 500


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: Any = None


def _check_field(name: Any) -> str:
    if not isinstance(name, str) or not _FIELD.match(name) or name != name.strip():
        raise InvalidQueryError(f"bad filter field name {name!r}: use letters, digits, '_', '.', '-'")
    return name


def _check_scalar(field: str, value: Any) -> Any:
    if isinstance(value, bool) or value is None or not isinstance(value, (str, int, float)):
        raise InvalidQueryError(f"filter on {field}: values must be text or numbers, not {value!r}")
    return value


def condition(field: str, op: str, value: Any = None) -> Condition:
    """Build one validated condition."""
    field = _check_field(field)
    if op not in OPS:
        raise InvalidQueryError(f"filter on {field}: unknown operator {op!r} (use one of {', '.join(OPS)})")
    if op in ("in", "nin"):
        if not isinstance(value, (list, tuple)) or not value:
            raise InvalidQueryError(f"filter on {field}: {op} needs a non-empty list")
        if len(value) > MAX_VALUES:
            raise InvalidQueryError(f"filter on {field}: at most {MAX_VALUES} values")
        value = tuple(_check_scalar(field, v) for v in value)
    elif op == "exists":
        if not isinstance(value, bool):
            raise InvalidQueryError(f"filter on {field}: exists takes true or false")
    else:
        value = _check_scalar(field, value)
    return Condition(field, op, value)


def from_json(obj: Mapping[str, Any] | None) -> list[Condition]:
    """The API's filter object -> conditions. ``{"f": v}`` is ``eq``, ``{"f": [..]}`` is ``in``."""
    if obj is None:
        return []
    if not isinstance(obj, Mapping):
        raise InvalidQueryError("filter must be a JSON object of field -> condition")
    conditions: list[Condition] = []
    for field, spec in obj.items():
        if isinstance(spec, Mapping):
            if not spec:
                raise InvalidQueryError(f"filter on {field}: empty condition")
            conditions.extend(condition(field, op, value) for op, value in spec.items())
        elif isinstance(spec, list):
            conditions.append(condition(field, "in", spec))
        else:
            conditions.append(condition(field, "eq", spec))
    return conditions


_WHERE = re.compile(
    r"^\s*(?P<field>[A-Za-z_][\w.\-]*)\s*(?:"
    r"(?P<not_in>not\s+in)\s*\[(?P<nin>.*)\]"
    r"|(?P<in_>in)\s*\[(?P<in>.*)\]"
    r"|between\s+(?P<lo>.+?)\s+and\s+(?P<hi>.+)"
    r"|(?P<nexists>not\s+exists)"
    r"|(?P<exists>exists)"
    r"|(?P<cmp>==|=|!=|<=|>=|<|>)\s*(?P<value>.*?)"
    r")\s*$",
    re.IGNORECASE | re.DOTALL,
)
_CMP = {"=": "eq", "==": "eq", "!=": "ne", "<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}


def parse_value(raw: str) -> Any:
    """A CLI value: quoted -> text as written; otherwise a number when it looks like one."""
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        return raw[1:-1]
    if not raw:
        raise InvalidQueryError("filter value is empty")
    return coerce_scalar(raw)


def _split_list(raw: str) -> list[Any]:
    items = [p for p in re.findall(r"\"[^\"]*\"|'[^']*'|[^,]+", raw) if p.strip()]
    return [parse_value(p) for p in items]


def parse_where(expression: str) -> list[Condition]:
    """One ``--where`` expression -> its conditions (``between`` gives two)."""
    m = _WHERE.match(expression or "")
    if not m:
        raise InvalidQueryError(
            f"cannot read filter {expression!r}; write e.g. \"brand = Acme\", \"price <= 80\", "
            "\"price between 10 and 80\", \"category in [bags, shoes]\" or \"colour exists\""
        )
    field = m.group("field")
    if m.group("not_in"):
        return [condition(field, "nin", _split_list(m.group("nin")))]
    if m.group("in_"):
        return [condition(field, "in", _split_list(m.group("in")))]
    if m.group("lo") is not None:
        return [condition(field, "gte", parse_value(m.group("lo"))), condition(field, "lte", parse_value(m.group("hi")))]
    if m.group("nexists"):
        return [condition(field, "exists", False)]
    if m.group("exists"):
        return [condition(field, "exists", True)]
    return [condition(field, _CMP[m.group("cmp")], parse_value(m.group("value")))]


def parse_wheres(expressions: Iterable[str]) -> list[Condition]:
    return [c for e in expressions for c in parse_where(e)]


# --- SQL ---
class _Params:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def add(self, value: Any) -> str:
        name = f"f{len(self.values)}"
        self.values[name] = value
        return f":{name}"


def _json_path(field: str) -> str:
    return '$."' + field + '"'


def _type_check(value: Any, type_expr: str | None) -> str:
    if type_expr is None:
        return ""
    return f"{type_expr} IN ('integer', 'real') AND " if isinstance(value, (int, float)) else f"{type_expr} = 'text' AND "


def compared(cond: Condition, compare: Callable[[Any, str], str]) -> str:
    """The positive test of ``eq``/``ne``, ``in``/``nin`` or a range, given ``compare(value, sql operator)``
    that tests one value against the field (the SQL dialects differ only there)."""
    if cond.op in ("eq", "ne"):
        return compare(cond.value, "=")
    if cond.op in ("in", "nin"):
        return "(" + " OR ".join(f"({compare(v, '=')})" for v in cond.value) + ")"
    return compare(cond.value, _RANGE_SQL[cond.op])


def _predicate(cond: Condition, params: _Params, column: str, type_expr: str | None) -> str:
    """``compared`` against one value expression (``type_expr`` is its JSON type, to keep numbers and
    texts apart; None for plain columns)."""
    return compared(cond, lambda value, op: f"{_type_check(value, type_expr)}{column} {op} {params.add(value)}")


def _condition_sql(cond: Condition, params: _Params) -> str:
    if cond.op == "exists":
        if cond.field in COLUMN_FIELDS:
            return "1" if cond.value else "0"
        path = params.add(_json_path(cond.field))
        present = f"coalesce(json_type(items.meta, {path}), 'null') != 'null'"
        return present if cond.value else f"NOT ({present})"
    if cond.field in COLUMN_FIELDS:
        sql = _predicate(cond, params, COLUMN_FIELDS[cond.field], None)
    else:
        path = params.add(_json_path(cond.field))
        json_type, value = f"json_type(items.meta, {path})", f"json_extract(items.meta, {path})"
        any_element = f"EXISTS (SELECT 1 FROM json_each(items.meta, {path}) WHERE {_predicate(cond, params, 'value', 'type')})"
        scalar = _predicate(cond, params, value, json_type)
        # a scalar is tested directly (fast); a list matches when any element does; a missing field never matches
        sql = f"coalesce(CASE WHEN {json_type} = 'array' THEN {any_element} ELSE ({scalar}) END, 0)"
    return f"NOT ({sql})" if cond.op in ("ne", "nin") else sql


def candidate_sql(conditions: list[Condition], modalities: Iterable[str], dialect: str = "sqlite") -> tuple[str, dict]:
    """-> (``SELECT id FROM items WHERE ...``, bound parameters): the ids of items of these modalities
    that satisfy every condition, in the SQL of ``dialect`` (``sqlite`` or ``postgresql``)."""
    params = _Params()
    names = ", ".join(params.add(m) for m in modalities)
    if dialect == "postgresql":
        from mmsearch.filters_pg import condition_sql
    else:
        condition_sql = _condition_sql
    clauses = [f"items.modality IN ({names})"] + [condition_sql(c, params) for c in conditions]
    return "SELECT items.id FROM items WHERE " + " AND ".join(clauses), params.values


def create_filter_indexes(conn) -> None:
    """Migration ``003_product_index``: an index on the ``product`` link (SKU), used to find a product's
    items (its picture for a text hit, grouping) without scanning every row."""
    from sqlalchemy import text

    conn.execute(text(f"CREATE INDEX IF NOT EXISTS ix_items_product ON items ({product_sql(conn.dialect.name)})"))


def product_sql(dialect: str) -> str:
    """An item's product link (SKU) as SQL: the very expression ``ix_items_product`` indexes."""
    return "(meta ->> 'product')" if dialect == "postgresql" else "json_extract(meta, '$.product')"


def field_sql(dialect: str, name: str) -> tuple[str, str]:
    """-> (SQL of a metadata field's value, with the parameter ``:path``; the value to bind to it)."""
    if dialect == "postgresql":
        return "(meta -> :path)", name
    return "json_extract(meta, :path)", _json_path(name)


def describe(conditions: list[Condition]) -> list[dict]:
    return [{"field": c.field, "op": c.op, "value": list(c.value) if isinstance(c.value, tuple) else c.value} for c in conditions]
