"""The product-search options of ``mmsearch search``: filters (``--where``), modes, composite terms,
"more like this", grouping, sorting, score cut-off and paging. See docs/search.md."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import click

from mmsearch.errors import InvalidQueryError

MODES = ("vector", "keyword", "hybrid")  # as mmsearch.query.MODES; that module loads numpy/FAISS, so it is imported lazily

MINUS_WEIGHT = -0.5
_TERM = re.compile(r"^\s*(?P<weight>[+-]?(?:\d+\.?\d*|\.\d+))\s*:(?P<rest>.*)$", re.DOTALL)

_OPTIONS = [
    click.option("--where", "wheres", multiple=True, metavar="EXPR",
                 help='Exact filter, repeatable (all must hold): "brand = Acme", "price <= 80", "category in [bags,shoes]".'),
    click.option("--near", default=None, metavar="LAT,LON",
                 help="Photos taken within --within-km of this position (degrees, e.g. 38.71,-9.14)."),
    click.option("--within-km", type=click.FloatRange(0, None, min_open=True), default=None, metavar="KM",
                 help="Radius of --near in km [default 5]."),
    click.option("--mode", type=click.Choice(MODES), default="vector", show_default=True,
                 help="Rank by embeddings, by keywords (BM25), or both fused."),
    click.option("--keyword-weight", type=click.FloatRange(0, 1), default=0.5, show_default=True,
                 help="Hybrid mode: share of the keyword ranking in the fusion."),
    click.option("--minus", "minus", multiple=True, metavar="TEXT", help=f"Push results like TEXT down (weight {MINUS_WEIGHT})."),
    click.option("--term", "terms", multiple=True, metavar="[W:]TEXT|[W:]image:PATH|[W:]item:ID",
                 help='Weighted query term, repeatable, e.g. "0.5:red dress", "-1:long sleeves", "2:image:photo.jpg".'),
    click.option("--like", "like", type=click.IntRange(0, None), multiple=True, metavar="ITEM_ID",
                 help="More like this stored item (its own vector is the query)."),
    click.option("--group", is_flag=True, help="One hit per product (SKU)."),
    click.option("--offset", type=click.IntRange(0, None), default=0, show_default=True, help="Skip this many results (paging)."),
    click.option("--sort", default=None, metavar="FIELD", help="Sort the relevant results by a field; -FIELD for descending."),
    click.option("--min-score", type=float, default=None, help="Drop results scoring below this."),
]


def shop_search_options(command: Callable) -> Callable:
    """Decorate ``search`` with the product-search options."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def wants_query_engine(text, image_file, queries_file, shop: dict) -> bool:
    """Plain one-query searches keep the original path; anything composite goes to the query engine."""
    composite = bool(
        shop["wheres"] or shop["near"] or shop["within_km"] is not None or shop["mode"] != "vector" or shop["minus"]
        or shop["terms"] or shop["like"] or shop["group"]
        or shop["offset"] or shop["sort"] or shop["min_score"] is not None
    )
    if queries_file is not None:
        if composite:
            raise InvalidQueryError("--queries-file runs plain searches; it cannot be combined with --where, --mode, --term and the like")
        return False
    return composite or (text is not None and image_file is not None)


def _load_image(path: str):
    from mmsearch.imaging.decode import DecodeError, open_image

    try:
        return open_image(str(path))
    except (DecodeError, OSError) as exc:
        raise InvalidQueryError(f"cannot read query image {path}: {exc}") from exc


def parse_term(spec: str):
    """``[WEIGHT:]TEXT``, ``[WEIGHT:]image:PATH`` or ``[WEIGHT:]item:ID`` -> a Term (weight 1 by default)."""
    from mmsearch.query import Term

    weight, rest = 1.0, spec
    m = _TERM.match(spec)
    if m:
        weight, rest = float(m.group("weight")), m.group("rest")
    if rest.startswith("image:"):
        return Term(weight=weight, image=_load_image(rest[len("image:"):]))
    if rest.startswith("item:"):
        try:
            return Term(weight=weight, item_id=int(rest[len("item:"):]))
        except ValueError as exc:
            raise InvalidQueryError(f"bad item id in term {spec!r}") from exc
    return Term(weight=weight, text=rest)


def build_terms(text, image_file, shop: dict) -> list:
    from mmsearch.query import Term

    terms = [Term(text=text)] if text is not None else []
    if image_file is not None:
        terms.append(Term(image=_load_image(image_file)))
    terms += [Term(weight=MINUS_WEIGHT, text=m) for m in shop["minus"]]
    terms += [parse_term(t) for t in shop["terms"]]
    terms += [Term(item_id=i) for i in shop["like"]]
    if not any(t.weight > 0 for t in terms):
        raise InvalidQueryError("give something to search for: TEXT, --image, --like or a --term with a positive weight")
    return terms


DEFAULT_KM = 5.0


def conditions(shop: dict) -> list:
    """``--where`` expressions and ``--near``/``--within-km`` as filter conditions."""
    from mmsearch.storage.filters import parse_near, parse_wheres

    found = parse_wheres(shop["wheres"])
    if shop["near"]:
        found.append(parse_near(shop["near"], shop["within_km"] or DEFAULT_KM))
    elif shop["within_km"] is not None:
        raise InvalidQueryError("--within-km needs --near LAT,LON")
    return found


def run_query(searcher, text, image_file, target: str, k: int, as_json: bool, shop: dict) -> None:
    from mmsearch.query import Query, QueryEngine

    query = Query(
        terms=build_terms(text, image_file, shop), conditions=conditions(shop), mode=shop["mode"],
        target=target, keyword_weight=shop["keyword_weight"], group=shop["group"], offset=shop["offset"], limit=k,
        sort=shop["sort"], min_score=shop["min_score"],
    )
    result = QueryEngine(searcher).run(query)
    parts = [text, str(image_file) if image_file else None] + [f"minus:{m}" for m in shop["minus"]]
    parts += list(shop["terms"]) + [f"like:{i}" for i in shop["like"]]
    label = " ".join(p for p in parts if p)
    print_result(label, result, as_json)


def print_result(label: str, result, as_json: bool) -> None:
    """Print a mmsearch.query.QueryResult: one line per hit with its score, or one JSON object."""
    if as_json:
        click.echo(json.dumps({"query": label, "mode": result.mode, "offset": result.offset, "total": result.total,
                               "has_more": result.has_more, "hits": [h.to_dict() for h in result.hits]}, ensure_ascii=False))
        return
    click.echo(f"# {label}  [{result.mode}; results {result.offset + 1}-{result.offset + len(result.hits)} of {result.total}]")
    if not result.hits:
        click.echo("  (no results match)")
    for rank, h in enumerate(result.hits, result.offset + 1):
        meta = h.metadata
        what = meta.get("title") or (h.text or "").replace("\n", " ") or (Path(h.path).name if h.path else "")
        if len(what) > 60:
            what = what[:57] + "..."
        price = f" {meta['price']} {meta.get('currency', '')}".rstrip() if "price" in meta else ""
        sku = f" {h.product}" if h.product else ""
        click.echo(f"{rank:>3}. {h.score:.4f} {h.modality:<5} [{h.id}]{sku} {what}{price}{_photo_line(meta)}")
        if h.snippet:
            click.echo(f"       text in image: {h.snippet}")
        if h.moments:
            from mmsearch.moments import describe

            click.echo(f"       {describe(h.moments)}")


def _photo_line(meta: dict) -> str:
    """A photo's date, camera and place, when it has them: `` 2023-06-01 · Google Pixel 7 · Lisbon, Portugal``."""
    place = ", ".join(str(meta[k]) for k in ("city", "country") if isinstance(meta.get(k), str))
    taken = str(meta["taken"])[:10] if isinstance(meta.get("taken"), str) else ""
    parts = [p for p in (taken, meta.get("camera") if isinstance(meta.get("camera"), str) else "", place) if p]
    return ("  " + " · ".join(parts)) if parts else ""
