"""Exact metadata filters: equality, membership, numeric and date ranges, presence, on any field.

A filter is a list of conditions that must all hold. It is compiled to SQL over the JSON metadata
column (``mmsearch.storage.filter_sql``: SQLite JSON1 there, PostgreSQL JSONB in ``mmsearch.storage.postgres.filters``), so the set of matching item ids is resolved in the database and the vector and
keyword searches run *inside* that set: a filtered-out item is never returned, and k results come back
whenever k items match.

Two spellings of the same thing:

* CLI ``--where``: ``brand = Acme``, ``brand != Acme``, ``has_text = true``, ``price <= 80``, ``price between 10 and 80``,
  ``category in [bags, shoes]``, ``category not in [hats]``, ``released >= 2024-01-01``,
  ``colour exists``, ``colour not exists``;
* API JSON object: ``{"brand": "Acme", "category": {"in": ["bags", "shoes"]}, "price": {"gte": 10, "lte": 80}}``.

Semantics (both spellings): numbers compare as numbers and only match numeric values; text compares
exactly (case-sensitive), and ranges over text compare lexicographically, which orders ISO-8601 dates
correctly; ``true``/``false`` (unquoted on the CLI, JSON booleans in the API) match boolean fields such as
``has_text``, and the texts "true"/"false" too; a list-valued field matches when any element does;
``ne``/``nin`` also match items that lack the field.

Photo libraries (mmsearch.imaging.photometa) add three rules:

* a bare day (``2023-06-30``) stands for the whole day when compared with timestamps: ``taken =
  2023-06-30`` matches any time that day, ``taken <= 2023-06-30`` includes it and ``taken > 2023-06-30``
  starts the day after (a day is a prefix of its timestamps, so the plain text order would cut it short);
* ``camera`` matches the full name or the model alone: ``camera = 'Pixel 7'`` finds "Google Pixel 7"
  (``FIELD_ALIASES``), as people name their camera either way;
* ``near`` is a radius: ``--near 38.71,-9.14 --within-km 5``, ``{"near": {"lat": 38.71, "lon": -9.14,
  "km": 5}}``: items whose ``gps_lat``/``gps_lon`` lie within that great-circle distance (a bounding box
  in SQL first, then the exact distance, still inside the database so k results come back).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from mmsearch.scalars import coerce_scalar
from mmsearch.errors import InvalidQueryError

OPS = ("eq", "ne", "in", "nin", "gt", "gte", "lt", "lte", "exists")
NEAR = "near"  # the radius filter's field and operator: value (lat, lon, km) over gps_lat/gps_lon
MAX_KM = 20_038.0  # half the Earth's circumference: every point is nearer than this
# a field name that also matches other fields: "camera = 'Pixel 7'" finds camera "Google Pixel 7" by its
# camera_model; applies to eq/in (any of the fields) and ne/nin (none of them)
FIELD_ALIASES = {"camera": ("camera", "camera_model")}
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DAY_END = "\uffff"  # sorts after every character: "2023-06-30" + DAY_END is the end of that day
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


def _check_scalar(field: str, value: Any, *, boolean: bool = False) -> Any:
    if isinstance(value, bool):
        if boolean:
            return value
        raise InvalidQueryError(f"filter on {field}: true/false can only be compared with = or !=")
    if value is None or not isinstance(value, (str, int, float)):
        raise InvalidQueryError(f"filter on {field}: values must be text, numbers or true/false, not {value!r}")
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
        value = tuple(_check_scalar(field, v, boolean=True) for v in value)
    elif op == "exists":
        if not isinstance(value, bool):
            raise InvalidQueryError(f"filter on {field}: exists takes true or false")
    else:
        value = _check_scalar(field, value, boolean=op in ("eq", "ne"))
    return Condition(field, op, value)


def near(lat: Any, lon: Any, km: Any) -> Condition:
    """The radius filter: items whose GPS position lies within ``km`` of (``lat``, ``lon``)."""
    values = []
    for name, value, low, high in (("lat", lat, -90, 90), ("lon", lon, -180, 180), ("km", km, 0, MAX_KM)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high or value != value:
            raise InvalidQueryError(f"near: {name} must be a number from {low} to {high:g}, not {value!r}")
        values.append(float(value))
    if values[2] <= 0:
        raise InvalidQueryError("near: the radius (km) must be above 0")
    return Condition(NEAR, NEAR, tuple(values))


def parse_near(position: str, km: float) -> Condition:
    """CLI ``--near LAT,LON --within-km KM``."""
    parts = [p.strip() for p in (position or "").split(",")]
    try:
        lat, lon = (float(p) for p in parts)
    except ValueError:
        raise InvalidQueryError(f"--near takes LAT,LON in degrees (e.g. 38.71,-9.14), not {position!r}") from None
    return near(lat, lon, km)


def from_json(obj: Mapping[str, Any] | None) -> list[Condition]:
    """The API's filter object -> conditions. ``{"f": v}`` is ``eq``, ``{"f": [..]}`` is ``in``;
    ``{"near": {"lat": .., "lon": .., "km": ..}}`` is the radius filter."""
    if obj is None:
        return []
    if not isinstance(obj, Mapping):
        raise InvalidQueryError("filter must be a JSON object of field -> condition")
    conditions: list[Condition] = []
    for field, spec in obj.items():
        if field == NEAR:
            if not isinstance(spec, Mapping) or set(spec) != {"lat", "lon", "km"}:
                raise InvalidQueryError('filter near needs {"lat": .., "lon": .., "km": ..}')
            conditions.append(near(spec["lat"], spec["lon"], spec["km"]))
        elif isinstance(spec, Mapping):
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
    """A CLI value: quoted -> text as written; true/false -> a boolean; otherwise a number when it looks
    like one."""
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        return raw[1:-1]
    if not raw:
        raise InvalidQueryError("filter value is empty")
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
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
class Params:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def add(self, value: Any) -> str:
        name = f"f{len(self.values)}"
        self.values[name] = value
        return f":{name}"


def json_path(field: str) -> str:
    return '$."' + field + '"'


def compared(cond: Condition, compare: Callable[[Any, str], str]) -> str:
    """The positive test of ``eq``/``ne``, ``in``/``nin`` or a range, given ``compare(value, sql operator)``
    that tests one value against the field (the SQL dialects differ only there). A bare day stands for
    the whole day (see the module's docstring)."""
    if cond.op in ("eq", "ne"):
        return _equal(cond.value, compare)
    if cond.op in ("in", "nin"):
        return "(" + " OR ".join(f"({_equal(v, compare)})" for v in cond.value) + ")"
    if _is_day(cond.value) and cond.op in ("lte", "gt"):
        return compare(cond.value + DAY_END, _RANGE_SQL[cond.op])
    return compare(cond.value, _RANGE_SQL[cond.op])


def _is_day(value: Any) -> bool:
    return isinstance(value, str) and bool(_DAY.match(value))


def _equal(value: Any, compare: Callable[[Any, str], str]) -> str:
    if _is_day(value):
        return f"({compare(value, '>=')} AND {compare(value + DAY_END, '<=')})"
    return compare(value, "=")


def aliased(cond: Condition) -> tuple[list[Condition], str]:
    """A condition on an aliased field -> (the same condition on each field it stands for, how to join
    their SQL: ``OR`` for eq/in, ``AND`` for ne/nin, which are negated per field); else ([cond], "")."""
    fields = FIELD_ALIASES.get(cond.field)
    if not fields or cond.op not in ("eq", "in", "ne", "nin"):
        return [cond], ""
    return [Condition(f, cond.op, cond.value) for f in fields], "OR" if cond.op in ("eq", "in") else "AND"


def product_sql(dialect: str) -> str:
    """An item's product link (SKU) as SQL: the very expression ``ix_items_product`` indexes."""
    return "(meta ->> 'product')" if dialect == "postgresql" else "json_extract(meta, '$.product')"


def unit_sql(dialect: str) -> str:
    """The video or PDF an item was taken from (``unit``, see mmsearch.moments) as SQL."""
    return "(meta ->> 'unit')" if dialect == "postgresql" else "json_extract(meta, '$.unit')"


def field_sql(dialect: str, name: str) -> tuple[str, str]:
    """-> (SQL of a metadata field's value, with the parameter ``:path``; the value to bind to it)."""
    if dialect == "postgresql":
        return "(meta -> :path)", name
    return "json_extract(meta, :path)", json_path(name)


def describe(conditions: list[Condition]) -> list[dict]:
    return [{"field": c.field, "op": c.op, "value": list(c.value) if isinstance(c.value, tuple) else c.value} for c in conditions]
