"""Catalogue ingest: products become linked text + image items with typed metadata, and re-ingesting
a changed catalogue updates, re-embeds and removes exactly what changed."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text as sql

from catalogue_data import make_products, write_catalogue
from conftest import run_index
from mmsearch.scalars import coerce_scalar
from mmsearch.storage import store as store_module
from mmsearch.errors import SourceError
from mmsearch.storage.filters import parse_wheres
from mmsearch.query import Query, QueryEngine, Term
from mmsearch.search import Searcher
from mmsearch.storage.store import NewItem, Store


def by_product(searcher: Searcher) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in searcher.store.all_items():
        out.setdefault(r.meta.get("product"), []).append(r)
    return out


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_catalogue_rows_become_linked_typed_items(tmp_path, tiny_encoder, fmt):
    products = make_products(6)
    path = write_catalogue(tmp_path / "shop", products, fmt)
    report = run_index(path, tmp_path / "idx", tiny_encoder)
    assert report.failures == []
    searcher = Searcher(tmp_path / "idx", tiny_encoder)
    groups = by_product(searcher)
    assert set(groups) == {p["sku"] for p in products}
    for p in products:
        items = groups[p["sku"]]
        texts = [r for r in items if r.modality == "text"]
        images = sorted((r for r in items if r.modality == "image"), key=lambda r: r.key)
        assert len(texts) == 1 and texts[0].text == f"{p['title']}. {p['description']}"
        assert [r.path for r in images] == [str((tmp_path / "shop" / ref).resolve()) for ref in p["refs"]]
        assert texts[0].key == f"{path}#{p['sku']}/text"
        for r in items:
            assert r.meta["price"] == p["price"] and isinstance(r.meta["price"], (int, float))
            assert r.meta["stock"] == p["stock"] and isinstance(r.meta["stock"], int)
            assert r.meta["sku"] == p["sku"] and r.meta["brand"] == p["brand"]
            assert not any(k in r.meta for k in ("image", "image2", "images"))


def test_reingest_updates_changed_rows_and_removes_dropped_skus(tmp_path, tiny_encoder):
    products = make_products(8)
    path = write_catalogue(tmp_path / "shop", products)
    run_index(path, tmp_path / "idx", tiny_encoder)
    searcher = Searcher(tmp_path / "idx", tiny_encoder)
    before = {r.key: r for r in searcher.store.all_items()}
    searcher.close()

    repriced, retitled, dropped = products[0], products[1], products[2]
    repriced["price"] = 1.25
    retitled["title"] = "Zanzibar silk handbag"
    products.remove(dropped)
    added = make_products(9)[8]
    products.append(added)
    write_catalogue(tmp_path / "shop", products)
    report = run_index(path, tmp_path / "idx", tiny_encoder)

    assert report.removed == 1 + dropped["n_images"]
    assert report.added == 1 + added["n_images"]
    assert report.reembedded == 1  # only the retitled product's text changed its content
    assert report.updated == (1 + repriced["n_images"]) + retitled["n_images"]

    searcher = Searcher(tmp_path / "idx", tiny_encoder)
    after = {r.key: r for r in searcher.store.all_items()}
    assert not any(r.meta["product"] == dropped["sku"] for r in after.values())
    for key, record in after.items():
        if key in before:
            assert record.id == before[key].id  # keys are stable per SKU: same ids, no churn
    engine = QueryEngine(searcher)
    cheap = engine.run(Query([Term(text="anything")], parse_wheres(["price < 2"]), target="all", limit=50))
    assert {h.product for h in cheap.hits} == {repriced["sku"]}
    found = engine.run(Query([Term(text="Zanzibar")], mode="keyword", target="text", limit=5))
    assert [h.product for h in found.hits] == [retitled["sku"]]
    gone = engine.run(Query([Term(text=dropped["sku"])], mode="keyword", target="all", limit=5))
    assert gone.hits == []


def test_catalogue_flag_reads_other_column_names(tmp_path, tiny_encoder):
    root = tmp_path / "shop"
    root.mkdir()
    (root / "items.jsonl").write_text(
        json.dumps({"product_id": "P1", "name": "Green wool beanie", "price": "12.50"}) + "\n"
        + json.dumps({"product_id": "P2", "name": "Blue cotton scarf", "price": "20"}) + "\n",
        encoding="utf-8",
    )
    run_index(root / "items.jsonl", tmp_path / "plain", tiny_encoder)
    plain = Searcher(tmp_path / "plain", tiny_encoder).store.all_items()
    assert all("product" not in r.meta for r in plain)  # without the flag: an ordinary manifest

    run_index(root / "items.jsonl", tmp_path / "cat", tiny_encoder, catalogue=True)
    items = Searcher(tmp_path / "cat", tiny_encoder).store.all_items()
    assert sorted(r.meta["product"] for r in items) == ["P1", "P2"]
    assert sorted(r.meta["price"] for r in items) == [12.5, 20]


def test_catalogue_flag_on_a_file_without_sku_is_an_error(tmp_path, tiny_encoder):
    (tmp_path / "rows.csv").write_text("caption,colour\nhello,red\n", encoding="utf-8")
    with pytest.raises(SourceError, match="not a product catalogue"):
        run_index(tmp_path / "rows.csv", tmp_path / "idx", tiny_encoder, catalogue=True)


def test_repeated_sku_is_reported_not_merged(tmp_path, tiny_encoder):
    products = make_products(2)
    path = write_catalogue(tmp_path / "shop", products)
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(lines + [lines[1]]) + "\n", encoding="utf-8")
    report = run_index(path, tmp_path / "idx", tiny_encoder)
    assert any("appears more than once" in reason for _, reason in report.failures)


@pytest.mark.parametrize("raw,value", [("79.50", 79.5), ("3", 3), ("-2", -2), ("00123", "00123"), ("1e3", 1000.0),
                                       ("2024-05-01", "2024-05-01"), (" Acme ", "Acme"), ("12abc", "12abc")])
def test_cells_become_typed_values(raw, value):
    assert coerce_scalar(raw) == value and type(coerce_scalar(raw)) is type(value)


def test_existing_index_gains_keyword_search_by_migration(tmp_path, monkeypatch):
    db = tmp_path / "items.sqlite"
    monkeypatch.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS[:1])
    old = Store.at(db)
    old.write_batch([NewItem("k1", "text", None, "h", 0, 0.0, "a blue velvet armchair", {"brand": "Quillon"})],
                    [[1.0, 0.0]])
    old.close()
    monkeypatch.undo()

    upgraded = Store.at(db)
    with upgraded.engine.connect() as conn:
        names = set(conn.execute(sql("SELECT name FROM schema_migrations")).scalars())
        assert "002_keyword_fts" in names
        hits = conn.execute(sql("SELECT rowid FROM items_fts WHERE items_fts MATCH 'quillon'")).scalars().all()
    assert len(hits) == 1
    upgraded.write_batch([NewItem("k2", "text", None, "h2", 0, 0.0, "a red velvet sofa", {})], [[0.0, 1.0]])
    upgraded.update_items([(hits[0], {"text": "a green chair"})])
    with upgraded.engine.connect() as conn:
        match = lambda q: sorted(conn.execute(sql("SELECT rowid FROM items_fts WHERE items_fts MATCH :q"), {"q": q}).scalars())
        assert match("velvet") == [2] and match("green") == [1]
    upgraded.delete_items([2])
    with upgraded.engine.connect() as conn:
        assert conn.execute(sql("SELECT count(*) FROM items_fts")).scalar() == 1


def test_catalogue_inside_a_folder_claims_its_images(tmp_path, tiny_encoder):
    products = make_products(4)
    write_catalogue(tmp_path / "shop", products)
    report = run_index(tmp_path / "shop", tmp_path / "idx", tiny_encoder)
    items = Searcher(tmp_path / "idx", tiny_encoder).store.all_items()
    assert report.failures == []
    assert len(items) == sum(1 + p["n_images"] for p in products)  # no image indexed twice as a bare file
    assert all(r.meta.get("product") for r in items)
