"""Product search over HTTP: filters are exact (never leak, always fill k), hybrid finds exact tokens,
negative terms push down, grouping and paging behave, fields are listed, errors are clear."""

from __future__ import annotations

import base64
import io

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from catalogue_data import BRANDS, KINDS, open_shop

N_PRODUCTS = 30


@pytest.fixture(scope="module")
def shop(tmp_path_factory, tiny_encoder):
    root = tmp_path_factory.mktemp("shop")
    searcher, app, products, _ = open_shop(root, tiny_encoder, N_PRODUCTS)
    with TestClient(app) as client:
        yield client, searcher, products, root


def query(client, **body) -> dict:
    r = client.post("/v1/query", json=body)
    assert r.status_code == 200, r.text
    return r.json()


# --- a reference implementation of the documented filter semantics, to check the SQL against ---
def holds(meta: dict, field: str, op: str, value) -> bool:
    present = field in meta and meta[field] is not None
    if op == "exists":
        return present == value
    v = meta.get(field)
    same_type = lambda a, b: isinstance(a, str) == isinstance(b, str)
    if op in ("eq", "ne"):
        hit = present and same_type(v, value) and v == value
        return hit if op == "eq" else not hit
    if op in ("in", "nin"):
        hit = present and any(same_type(v, x) and v == x for x in value)
        return hit if op == "in" else not hit
    if not present or not same_type(v, value):
        return False
    return {"gt": v > value, "gte": v >= value, "lt": v < value, "lte": v <= value}[op]


def matching_ids(searcher, filt: dict, modalities=("image", "text")) -> set[int]:
    ids = set()
    for r in searcher.store.all_items():
        if r.modality in modalities and all(holds(r.meta, f, op, v) for f, cond in filt.items() for op, v in cond.items()):
            ids.add(r.id)
    return ids


prices = st.one_of(st.integers(0, 160), st.floats(0, 160, allow_nan=False).map(lambda x: round(x, 2)))
dates = st.builds(lambda y, m: f"20{y:02d}-{m:02d}-01", st.integers(19, 26), st.integers(1, 12))
conditions = st.one_of(
    st.builds(lambda v: ("category", {"in": v}), st.lists(st.sampled_from(sorted(KINDS) + ["boots"]), min_size=1, max_size=3, unique=True)),
    st.builds(lambda v: ("category", {"nin": v}), st.lists(st.sampled_from(sorted(KINDS)), min_size=1, max_size=2, unique=True)),
    st.builds(lambda v: ("brand", {"eq": v}), st.sampled_from(BRANDS + ["acme"])),
    st.builds(lambda v: ("brand", {"ne": v}), st.sampled_from(BRANDS)),
    st.builds(lambda lo, hi: ("price", {"gte": lo, "lte": hi}), prices, prices),
    st.builds(lambda v: ("price", {"lt": v}), prices),
    st.builds(lambda v: ("stock", {"gt": v}), st.integers(-1, 41)),
    st.builds(lambda lo: ("released", {"gte": lo}), dates),
    st.builds(lambda v: ("released", {"lt": v}), dates),
    st.builds(lambda v: ("price", {"eq": v}), st.sampled_from(["80", 80, 45])),  # text never equals a number
    st.builds(lambda v: ("colour", {"exists": v}), st.booleans()),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(picked=st.lists(conditions, min_size=1, max_size=3, unique_by=lambda c: c[0]), k=st.integers(1, 25),
       target=st.sampled_from(["image", "text", "all"]), mode=st.sampled_from(["vector", "hybrid"]))
def test_filters_never_leak_and_fill_k(shop, picked, k, target, mode):
    client, searcher, _, _ = shop
    filt = dict(picked)
    modalities = ("image", "text") if target == "all" else (target,)
    expected = matching_ids(searcher, filt, modalities)
    body = query(client, text="red leather handbag", filter=filt, limit=k, target=target, mode=mode)
    got = [h["id"] for h in body["hits"]]
    assert set(got) <= expected, f"leaked {set(got) - expected} for {filt}"
    assert len(got) == min(k, len(expected))
    assert len(set(got)) == len(got)


def test_filtered_keyword_mode_never_leaks(shop):
    client, searcher, _, _ = shop
    filt = {"brand": {"eq": "Acme"}, "price": {"lte": 80}}
    expected = matching_ids(searcher, filt)
    hits = query(client, text="leather wool canvas", filter=filt, mode="keyword", target="all", limit=200)["hits"]
    assert hits and {h["id"] for h in hits} <= expected
    assert all(h["keyword_score"] is not None for h in hits)


def test_hybrid_finds_an_exact_sku_that_vector_search_misses(shop):
    client, searcher, products, _ = shop
    missed = []
    for p in products:
        vector = query(client, text=p["sku"], mode="vector", target="text", limit=1)["hits"]
        if vector[0]["product"] != p["sku"]:
            missed.append(p["sku"])
    assert missed, "the random model should not map SKU strings to their products"
    for sku in missed[:5]:
        hybrid = query(client, text=sku, mode="hybrid", target="text", limit=3)["hits"]
        assert hybrid[0]["product"] == sku
        assert hybrid[0]["keyword_score"] is not None and hybrid[0]["vector_score"] is not None
        keyword = query(client, text=sku, mode="keyword", target="all", limit=10)["hits"]
        assert {h["product"] for h in keyword} == {sku}


def test_keyword_weight_zero_is_the_vector_ranking(shop):
    client, _, products, _ = shop
    sku = products[3]["sku"]
    vector = [h["id"] for h in query(client, text=sku, mode="vector", target="text", limit=10)["hits"]]
    fused = [h["id"] for h in query(client, text=sku, mode="hybrid", keyword_weight=0, target="text", limit=10)["hits"]]
    assert fused == vector


def test_negative_term_pushes_its_matches_down(shop):
    client, searcher, _, _ = shop
    plain = query(client, text="red leather handbag", target="text", limit=N_PRODUCTS)["hits"]
    top = plain[0]
    # Provable setup: with the top item's own text as a strong negative term, every other item x scores
    # <q,x> - w<a,x> against the top item's <q,a> - w; with cos(a, x) < 0.98 for all x and w = 100 the
    # top item must fall to the very bottom.
    vectors = searcher.store.vectors_for([h["id"] for h in plain])
    a = vectors[top["id"]]
    assert max(float(vectors[h["id"]] @ a) for h in plain[1:]) < 0.98
    pushed = query(client, target="text", limit=N_PRODUCTS,
                   terms=[{"text": "red leather handbag"}, {"text": top["text"], "weight": -100}])["hits"]
    assert [h["id"] for h in pushed][-1] == top["id"]
    assert sorted(h["id"] for h in pushed) == sorted(h["id"] for h in plain)
    scores = [h["score"] for h in pushed]
    assert scores == sorted(scores, reverse=True)


def test_negative_keyword_terms_go_last_in_keyword_mode(shop):
    client, _, _, _ = shop
    hits = query(client, target="text", mode="keyword", limit=N_PRODUCTS,
                 terms=[{"text": "handbag sneaker"}, {"text": "red", "weight": -1}])["hits"]
    reds = ["red" in h["text"].lower().split() or h["text"].lower().startswith("red") for h in hits]
    assert any(reds) and not all(reds)
    assert reds == sorted(reds)  # every item mentioning "red" comes after all the others


def test_grouping_gives_one_hit_per_sku_with_its_image(shop):
    client, searcher, products, _ = shop
    hits = query(client, text="blue wool scarf", target="all", group=True, limit=200)["hits"]
    skus = [h["product"] for h in hits]
    assert len(skus) == len(set(skus)) == N_PRODUCTS
    records = searcher.store.get_many([h["image_id"] for h in hits])
    for h in hits:
        image = records[h["image_id"]]
        assert image.modality == "image" and image.meta["product"] == h["product"]


@pytest.mark.parametrize("mode,group", [("vector", False), ("hybrid", True), ("keyword", False)])
def test_pages_are_stable_and_disjoint(shop, mode, group):
    client, _, _, _ = shop
    body = dict(text="green canvas sneaker Acme", target="all", mode=mode, group=group)
    everything = query(client, **body, limit=200)
    total = everything["total"]
    assert total > 14
    pages, offset = [], 0
    while True:
        page = query(client, **body, offset=offset, limit=7)
        pages.extend(h["id"] for h in page["hits"])
        assert page["total"] == total
        if not page["has_more"]:
            break
        offset += 7
    assert pages == [h["id"] for h in everything["hits"]]
    assert len(pages) == len(set(pages)) == total


def test_sort_by_field_and_min_score(shop):
    client, _, _, _ = shop
    hits = query(client, text="handbag", target="all", group=True, sort="-price", limit=200,
                 filter={"category": {"in": ["bags", "shoes"]}})["hits"]
    prices = [h["metadata"]["price"] for h in hits]
    assert prices == sorted(prices, reverse=True) and len(prices) > 3
    ranked = query(client, text="handbag", target="all", limit=200)["hits"]
    cut = ranked[len(ranked) // 2]["score"]
    kept = query(client, text="handbag", target="all", limit=200, min_score=cut)["hits"]
    assert kept and all(h["score"] >= cut for h in kept)
    assert [h["id"] for h in kept] == [h["id"] for h in ranked if h["score"] >= cut]


def test_more_like_this_excludes_the_item_and_its_product(shop):
    client, searcher, _, _ = shop
    image = next(r for r in searcher.store.all_items() if r.modality == "image")
    hits = query(client, terms=[{"item_id": image.id}], target="all", group=True, limit=50)["hits"]
    assert hits and image.meta["product"] not in {h["product"] for h in hits}
    plain = query(client, terms=[{"item_id": image.id}], target="image", limit=5)["hits"]
    assert image.id not in {h["id"] for h in plain}


def test_image_and_text_terms_together(shop):
    client, searcher, _, root = shop
    image = next(r for r in searcher.store.all_items() if r.modality == "image")
    buf = io.BytesIO()
    Image.open(image.path).convert("RGB").save(buf, format="PNG")
    data = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    alone = query(client, terms=[{"image_b64": data}], target="image", limit=1)["hits"]
    assert alone[0]["id"] == image.id and alone[0]["score"] > 0.99
    mixed = query(client, terms=[{"image_b64": data, "weight": 2}, {"text": "brown suede"}], target="image", limit=3)["hits"]
    assert len(mixed) == 3


def test_fields_lists_values_and_ranges(shop):
    client, _, products, _ = shop
    body = client.get("/v1/fields").json()
    fields = {f["name"]: f for f in body["fields"]}
    assert body["products"] == N_PRODUCTS
    assert fields["price"]["type"] == "number"
    assert fields["price"]["min"] == min(p["price"] for p in products)
    assert fields["price"]["max"] == max(p["price"] for p in products)
    category = {v["value"]: v["count"] for v in fields["category"]["values"]}
    assert category == {c: sum(p["category"] == c for p in products) for c in {p["category"] for p in products}}
    assert fields["sku"]["values"] is not None or fields["sku"]["distinct"] == N_PRODUCTS
    assert "manifest" not in fields and "role" not in fields


@pytest.mark.parametrize("body,needle", [
    ({"text": "x", "filter": {"price": {"between": [1, 2]}}}, "unknown operator"),
    ({"text": "x", "filter": {"category": {"in": []}}}, "non-empty list"),
    ({"text": "x", "filter": {"bad\"name": "a"}}, "bad filter field"),
    ({"text": "x", "filter": ["price"]}, "filter"),
    ({"terms": []}, "give text"),
    ({"terms": [{"text": "a", "item_id": 3}]}, "exactly one"),
    ({"terms": [{"image_b64": "%%%notbase64"}]}, "base64"),
    ({"terms": [{"image_b64": base64.b64encode(b"<html>").decode()}]}, "not readable"),
    ({"terms": [{"item_id": 99999999}]}, "no item"),
    ({"terms": [{"text": "a", "weight": 0}]}, "non-zero"),
    ({"text": "x", "mode": "fuzzy"}, "mode"),
    ({"terms": [{"item_id": 1}], "mode": "keyword"}, "keyword mode needs"),
    ({"text": "x", "sort": "price; drop table items"}, "sort"),
    ({"text": "x", "limit": 0}, "limit"),
])
def test_bad_queries_get_one_clear_json_error(shop, body, needle):
    client, _, _, _ = shop
    r = client.post("/v1/query", json=body)
    assert 400 <= r.status_code < 500, r.text
    assert needle in r.json()["error"]


def test_search_page_and_its_files_are_served(shop):
    client, _, _, _ = shop
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="q"' in page.text and "/static/app.js" in page.text
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"]


def test_hybrid_reports_the_mode_it_used(shop):
    client, searcher, _, _ = shop
    image = next(r for r in searcher.store.all_items() if r.modality == "image")
    assert query(client, terms=[{"item_id": image.id}], mode="hybrid")["mode"] == "vector"
    fused = query(client, text="qwertyuiop", mode="hybrid", target="text", limit=3)
    assert fused["mode"] == "hybrid"  # no keyword matched, still fused scores: one scale per mode
    assert all(h["score"] < 0.02 and h["keyword_score"] is None for h in fused["hits"])
