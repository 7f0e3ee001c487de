"""The metadata store on a real PostgreSQL server (started by the tests, see pg_server.py): indexing,
searching, incremental updates, keyword/hybrid SKU search, filters and field summaries with the same
answers as SQLite, API replicas sharing one catalogue, concurrent writers, and passwords kept secret.

Skipped only when the server binaries are missing and MMSEARCH_REQUIRE_POSTGRES is unset (CI sets it).
"""

from __future__ import annotations

import json
import os
import threading
import uuid

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import text as sql

from catalogue_data import make_products, write_catalogue
from conftest import run_index
from pg_server import PASSWORD, create_database, find_bindir, start_server

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="session")
def pg_server():
    bindir = find_bindir()
    if bindir is None:
        if os.environ.get("MMSEARCH_REQUIRE_POSTGRES"):
            pytest.fail("MMSEARCH_REQUIRE_POSTGRES is set but no PostgreSQL server (initdb, pg_ctl, postgres) is installed")
        pytest.skip("PostgreSQL server binaries not found (install the postgresql package)")
    server = start_server(bindir)
    yield server
    server.stop()


@pytest.fixture()
def pg_url(pg_server) -> str:
    """A fresh, empty database per test."""
    return create_database(pg_server, f"t_{uuid.uuid4().hex[:12]}")


def _searcher(index_dir, encoder, url):
    from mmsearch.search import Searcher

    return Searcher(index_dir, encoder, reload_interval=0, database_url=url)


def test_index_search_and_info_on_postgres(tmp_path, corpus, tiny_encoder, pg_url):
    from mmsearch.cli import main
    from mmsearch.storage.database import redact
    from mmsearch.storage.indexdir import describe
    from mmsearch.verify import verify_index

    root, files = corpus
    index_dir = tmp_path / "index"
    report = run_index(root, index_dir, tiny_encoder, database_url=pg_url)
    assert report.added == 9 and not report.failures  # six images and three notes
    assert not (index_dir / "items.sqlite").exists()

    searcher = _searcher(index_dir, tiny_encoder, pg_url)
    try:
        for name in ("img0", "img3", "img5"):
            hits = searcher.search_image(Image.open(files[name]), target="image", k=3)
            assert hits[0].path == str(files[name].resolve())
        hits = searcher.search_text(files["bread"].read_text(encoding="utf-8"), target="text", k=3)
        assert hits[0].path == str(files["bread"].resolve())
    finally:
        searcher.close()

    shown = redact(pg_url)
    assert PASSWORD not in shown and "@127.0.0.1" in shown
    manifest_text = (index_dir / "manifest.json").read_text(encoding="utf-8")
    assert json.loads(manifest_text)["database"] == shown and PASSWORD not in manifest_text
    facts = describe(index_dir, pg_url)
    assert facts["database"] == shown and facts["counts"] == {"image": 6, "text": 3}
    assert verify_index(index_dir, pg_url).ok

    result = CliRunner().invoke(main, ["info", "--index-dir", str(index_dir), "--json"], env={"MMSEARCH_DATABASE_URL": pg_url})
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["database"] == shown and PASSWORD not in result.output


def test_reindex_embeds_nothing_new_and_deleted_files_go(tmp_path, corpus, tiny_encoder, pg_url):
    root, files = corpus
    index_dir = tmp_path / "index"
    run_index(root, index_dir, tiny_encoder, database_url=pg_url)

    again = run_index(root, index_dir, False, database_url=pg_url)  # would fail if the model were loaded
    assert again.embedded == 0 and again.unchanged == again.scanned

    files["img1"].unlink()
    files["sea"].unlink()
    after = run_index(root, index_dir, tiny_encoder, database_url=pg_url)
    assert after.removed == 2 and after.embedded == 0
    searcher = _searcher(index_dir, tiny_encoder, pg_url)
    try:
        paths = {r.path for r in searcher.store.all_items()}
        assert str(files["img1"].resolve()) not in paths and str(files["sea"].resolve()) not in paths
        hits = searcher.search_image(pattern_of(files["img1"]), target="image", k=10)
        assert len(hits) == 5 and all(h.path != str(files["img1"].resolve()) for h in hits)
    finally:
        searcher.close()


def pattern_of(path):
    from conftest import pattern_image

    return pattern_image(int(path.stem[3:]))


@pytest.fixture(scope="module")
def shops(tmp_path_factory, tiny_encoder, pg_server):
    """The same generated catalogue indexed into SQLite and into PostgreSQL -> (sqlite engine, pg engine, products)."""
    from mmsearch.query import QueryEngine

    tmp_path = tmp_path_factory.mktemp("shops")
    pg_url = create_database(pg_server, f"shops_{uuid.uuid4().hex[:8]}")
    products = make_products(24)
    path = write_catalogue(tmp_path / "catalogue", products)
    run_index(path, tmp_path / "lite", tiny_encoder)
    run_index(path, tmp_path / "pg", tiny_encoder, database_url=pg_url)
    lite = _searcher(tmp_path / "lite", tiny_encoder, None)
    pg = _searcher(tmp_path / "pg", tiny_encoder, pg_url)
    assert pg.store.dialect == "postgresql"
    yield QueryEngine(lite), QueryEngine(pg), products
    lite.close()
    pg.close()


def test_keyword_and_hybrid_find_an_exact_sku_on_postgres(shops):
    from mmsearch.query import Query, Term

    _, pg, products = shops
    for sku in (p["sku"] for p in products[::5]):
        keyword = pg.run(Query([Term(text=sku)], mode="keyword", target="all", limit=10))
        assert keyword.hits and {h.product for h in keyword.hits} == {sku}
        hybrid = pg.run(Query([Term(text=sku)], mode="hybrid", target="text", limit=3))
        assert hybrid.hits[0].product == sku and hybrid.hits[0].keyword_score is not None
    words = pg.run(Query([Term(text="leather wool")], mode="keyword", target="text", limit=100))
    expected = {p["sku"] for p in products if "leather" in p["title"] or "wool" in p["title"]}
    assert {h.product for h in words.hits} == expected
    pushed = pg.run(Query([Term(text="leather wool"), Term(text="wool", weight=-1)], mode="keyword", target="text", limit=100))
    has_wool = [("wool" in h.text) for h in pushed.hits]
    assert has_wool == sorted(has_wool)  # items matching the negative term go last


FILTERS = [
    {"brand": "Acme"},
    {"brand": {"ne": "Acme"}},
    {"category": {"in": ["bags", "shoes"]}},
    {"category": {"nin": ["hats"]}},
    {"price": {"gte": 20, "lte": 80.5}},
    {"price": {"lt": 50}, "brand": ["Corvid", "Dunmore"]},
    {"released": {"gte": "2023-01-01"}},
    {"stock": 0},
    {"price": {"ne": "12"}},  # a text never equals a number: every item
    {"colour": {"exists": False}},
    {"sku": {"exists": True}, "modality": "image"},
]


@pytest.mark.parametrize("filt", FILTERS, ids=[json.dumps(f) for f in FILTERS])
def test_filters_select_the_same_items_as_sqlite(shops, filt):
    from mmsearch.storage.filter_sql import candidate_sql
    from mmsearch.storage.filters import from_json

    def keys(engine) -> set[str]:
        where, params = candidate_sql(from_json(filt), ("image", "text"), engine.store.dialect)
        with engine.store.engine.connect() as conn:
            ids = [int(r[0]) for r in conn.execute(sql(where), params)]
        return {r.key for r in engine.store.get_many(ids).values()}

    lite, pg, _ = shops
    expected = keys(lite)
    assert expected  # each filter selects something (or its negation does): a real comparison
    assert keys(pg) == expected


def test_filtered_sorted_grouped_query_and_fields_match_sqlite(shops):
    from mmsearch.storage.fields import field_summary, product_count
    from mmsearch.storage.filters import from_json
    from mmsearch.query import Query, Term

    lite, pg, products = shops
    query = Query([Term(text="leather bag")], from_json({"price": {"lte": 100}}), mode="hybrid", target="all", group=True,
                  sort="-price", limit=50)
    got, want = pg.run(query), lite.run(query)
    prices = [h.metadata["price"] for h in got.hits]
    assert prices == sorted(prices, reverse=True) and all(p <= 100 for p in prices)
    assert len({h.product for h in got.hits}) == len(got.hits) == got.total == want.total
    assert all(h.image_id is not None for h in got.hits)
    assert field_summary(pg.store) == field_summary(lite.store)
    assert product_count(pg.store) == product_count(lite.store) == len(products)


def test_list_valued_and_mixed_type_fields_on_postgres(pg_url):
    from mmsearch.storage.filter_sql import candidate_sql
    from mmsearch.storage.filters import from_json
    from mmsearch.storage.store import NewItem, Store

    store = Store(pg_url)
    metas = [{"tags": ["a", "b"], "size": [38, 40]}, {"tags": "a", "size": 42}, {}, {"tags": 5, "size": "40"}, {"tags": None}]
    ids_written = store.write_batch([NewItem(f"k{i}", "text", None, f"h{i}", 0, 0.0, "t", m) for i, m in enumerate(metas)],
                                    np.eye(5, 4, dtype=np.float32))

    def ids(filt):
        where, params = candidate_sql(from_json(filt), ("text",), "postgresql")
        with store.engine.connect() as conn:
            return sorted(ids_written.index(int(r[0])) for r in conn.execute(sql(where), params))

    try:
        assert ids({"tags": "a"}) == [0, 1]
        assert ids({"tags": ["b", 5]}) == [0, 3]
        assert ids({"tags": {"ne": "a"}}) == [2, 3, 4]
        assert ids({"tags": {"nin": ["a", "b"]}}) == [2, 3, 4]
        assert ids({"tags": {"exists": True}}) == [0, 1, 3]
        assert ids({"size": {"gte": 40}}) == [0, 1]
        assert ids({"size": {"gte": "4"}}) == [3]
        assert ids({"size": {"lt": 39}, "tags": "b"}) == [0]
        assert ids({"modality": "text"}) == [0, 1, 2, 3, 4] and ids({"modality": {"ne": "text"}}) == []
    finally:
        store.close()


def _search_paths(client, text: str) -> list[str]:
    r = client.post("/v1/search", json={"text": text, "target": "all", "k": 50})
    assert r.status_code == 200, r.text
    return [h["path"] for h in r.json()["hits"]]


def test_two_api_replicas_share_one_catalogue_and_see_updates(tmp_path, corpus, tiny_encoder, pg_url):
    from mmsearch.api import create_app
    from mmsearch.config import Settings

    root, files = corpus
    writer_dir = tmp_path / "index"
    run_index(root, writer_dir, tiny_encoder, database_url=pg_url)
    common = dict(database_url=pg_url, reload_interval=0, device="cpu", threads=1)
    shared = create_app(Settings(index_dir=writer_dir, **common))  # shares the writer's directory
    own = create_app(Settings(index_dir=tmp_path / "replica", **common))  # its own, empty: rebuilt from the database
    with TestClient(shared) as a, TestClient(own) as b:
        first = _search_paths(a, "the sea")
        assert first == _search_paths(b, "the sea") and len(first) == 9

        (root / "notes" / "kite.txt").write_text("A red kite flies over the hill.", encoding="utf-8")
        files["img2"].unlink()
        report = run_index(root, writer_dir, tiny_encoder, database_url=pg_url)
        assert report.added == 1 and report.removed == 1

        for client in (a, b):
            paths = _search_paths(client, "a red kite")
            assert str((root / "notes" / "kite.txt").resolve()) in paths
            assert str(files["img2"].resolve()) not in paths and len(paths) == 9
            assert client.get("/v1/info").json()["counts"] == {"image": 5, "text": 4}
    assert not (tmp_path / "replica" / "items.sqlite").exists()


def test_concurrent_writers_never_share_an_id(pg_url):
    from mmsearch.storage.store import NewItem, Store

    stores = [Store(pg_url), Store(pg_url)]
    batches, per_batch = 12, 4
    written: list[list[int]] = [[], []]
    errors: list[Exception] = []
    start = threading.Barrier(2)

    def write(n: int) -> None:
        start.wait()
        try:
            for b in range(batches):
                items = [NewItem(f"w{n}-{b}-{i}", "text", None, "h", 0, 0.0, f"writer {n}", {}) for i in range(per_batch)]
                written[n].extend(stores[n].write_batch(items, np.ones((per_batch, 4), np.float32)))
        except Exception as exc:  # e.g. a duplicate id refused by the primary key
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors
        every = written[0] + written[1]
        assert len(every) == len(set(every)) == 2 * batches * per_batch
        assert stores[0].count() == len(every)
        assert stores[0].generation() == 2 * batches  # no bump was lost
        by_id = stores[0].get_many(every)
        assert all(by_id[i].text == "writer 0" for i in written[0]) and all(by_id[i].text == "writer 1" for i in written[1])
    finally:
        for s in stores:
            s.close()


def test_one_index_run_per_catalogue_across_directories(tmp_path, pg_url):
    from mmsearch.errors import MmsearchError
    from mmsearch.storage.indexdir import IndexDir

    with IndexDir(tmp_path / "a", pg_url).write_lock():
        with pytest.raises(MmsearchError, match="another `mmsearch index` run is writing the catalogue") as caught:
            with IndexDir(tmp_path / "b", pg_url).write_lock():
                pass
        assert PASSWORD not in str(caught.value)
    with IndexDir(tmp_path / "b", pg_url).write_lock():  # released when the first run ends
        pass


def test_mixing_up_sqlite_and_database_indexes_is_one_clear_error(tmp_path, corpus, tiny_encoder, pg_url, pg_server):
    from mmsearch.errors import ConfigError, DatabaseUnavailableError
    from mmsearch.search import Searcher

    root, _ = corpus
    run_index(root, tmp_path / "lite", tiny_encoder)
    run_index(root, tmp_path / "pg", tiny_encoder, database_url=pg_url)
    with pytest.raises(ConfigError, match="holds an SQLite index"):
        Searcher(tmp_path / "lite", tiny_encoder, database_url=pg_url)
    with pytest.raises(ConfigError, match="set MMSEARCH_DATABASE_URL") as caught:
        Searcher(tmp_path / "pg", tiny_encoder)
    assert "127.0.0.1" in str(caught.value) and PASSWORD not in str(caught.value)
    wrong = pg_url.replace(PASSWORD, "not-the-password")
    with pytest.raises(DatabaseUnavailableError, match="cannot reach the database") as caught:
        Searcher(tmp_path / "pg", tiny_encoder, database_url=wrong)
    assert "not-the-password" not in str(caught.value)


def test_api_keys_live_in_the_shared_database(tmp_path, pg_url):
    """With a database URL every replica reads the same keys: one created or revoked on one side is seen
    by a server over another index directory, and no keys.sqlite is written."""
    from mmsearch.storage.apikeys import KEYS_FILE, KeyRing, KeyStore, Scope

    admin_side = KeyStore.beside(tmp_path / "replica-a", pg_url)
    key, secret = admin_side.create(Scope.WRITE, "shop-fr", "back end")
    replica = KeyRing(KeyStore.beside(tmp_path / "replica-b", pg_url))
    found = replica.authenticate(secret.encode())
    assert found is not None and found.id == key.id and found.allows(Scope.WRITE, "shop-fr")
    admin_side.revoke(key.id)
    replica.refresh()
    assert replica.authenticate(secret.encode()) is None and replica.enabled
    assert not (tmp_path / "replica-a" / KEYS_FILE).exists() and not (tmp_path / "replica-b" / KEYS_FILE).exists()
    admin_side.close()
    replica.store.close()

def test_collections_and_writes_on_postgres(tmp_path, corpus, tiny_encoder, pg_url):
    """Named collections get schemas of their own in the one database: written over the API, isolated from
    each other and from the default collection, seen by a replica, and gone with their schema when dropped."""
    from mmsearch.api import create_app
    from mmsearch.client import ApiError, Client
    from mmsearch.config import Settings
    from mmsearch.encoders import TEST_MODEL
    from mmsearch.storage.database import writer_lock_key
    from mmsearch.storage.collections import place

    root, _ = corpus
    run_index(root, tmp_path / "index", tiny_encoder, database_url=pg_url)
    common = dict(database_url=pg_url, reload_interval=0, device="cpu", threads=1, model=TEST_MODEL)
    with TestClient(create_app(Settings(index_dir=tmp_path / "index", **common))) as http:
        api = Client(http=http)
        assert api.upsert("plain", text="a default collection item")["status"] == "created"  # the write API on PostgreSQL
        for name in ("shop_a", "shop_b"):
            api.create_collection(name)
            assert api.collection(name).bulk([{"key": f"sku-{i}", "text": f"{name} product {i}", "metadata": {"shop": name}}
                                               for i in range(5)]).counts == {"created": 5}
        for name in ("shop_a", "shop_b"):
            hits = api.collection(name).search("shop_a product 3", target="all", k=50)
            assert {h["metadata"]["shop"] for h in hits} == {name} and len(hits) == 5
        assert "shop" not in str(api.search("shop_a product 3", target="all", k=50))
        engine_url = pg_url
        from sqlalchemy import create_engine

        engine = create_engine(engine_url)
        with engine.connect() as conn:
            schemas = {r[0] for r in conn.execute(sql("SELECT schema_name FROM information_schema.schemata"))}
            assert {"mmsearch_shop_a", "mmsearch_shop_b"} <= schemas
            assert conn.execute(sql("SELECT count(*) FROM mmsearch_shop_a.items")).scalar() == 5
        assert len({writer_lock_key(place(tmp_path / "index", n, pg_url).database_url or pg_url) for n in ("default", "shop_a", "shop_b")}) == 3

        # a replica with a directory of its own serves the same collections from the database
        with TestClient(create_app(Settings(index_dir=tmp_path / "replica", **common))) as other:
            replica = Client(http=other)
            assert [c["name"] for c in replica.collections()] == ["default", "shop_a", "shop_b"]
            assert replica.collection("shop_b").get("sku-2")["items"][0]["text"] == "shop_b product 2"

        api.drop_collection("shop_a")
        with engine.connect() as conn:
            schemas = {r[0] for r in conn.execute(sql("SELECT schema_name FROM information_schema.schemata"))}
        assert "mmsearch_shop_a" not in schemas and "mmsearch_shop_b" in schemas
        engine.dispose()
        with pytest.raises(ApiError) as gone:
            api.collection("shop_a").search("product")
        assert gone.value.status == 404


def test_text_read_in_images_is_searched_and_filtered_on_postgres(tmp_path, tiny_encoder, pg_url):
    from pathlib import Path

    from test_ocr import FONTS, folder_of_signs, keyword_query

    if not FONTS:
        pytest.skip("needs the Debian font packages fonts-dejavu-core and fonts-liberation")
    run_index(folder_of_signs(tmp_path / "signs"), tmp_path / "index", tiny_encoder, ocr=True, database_url=pg_url)
    searcher = _searcher(tmp_path / "index", tiny_encoder, pg_url)
    result = keyword_query(searcher, "museum entrance")  # the tsvector holds ocr_text
    assert Path(result.hits[0].path).name == "museum.png" and "museum" in result.hits[0].snippet.lower()
    with_text = keyword_query(searcher, "bakery", "has_text = true")
    assert [Path(h.path).name for h in with_text.hits] == ["bakery.png"]  # the text note about bread has no has_text


PHOTO_FILTERS = [
    {"taken": {"gte": "2022-03-01", "lte": "2022-09-30"}},
    {"taken": "2021-01-01"},
    {"taken": {"gt": "2023-06-06"}},
    {"camera": "Pixel 7"},
    {"camera": {"nin": ["Pixel 7", "Nikon D850"]}},
    {"country": "Portugal", "camera": ["iPhone 13", "EOS R5"]},
    {"near": {"lat": 38.7107, "lon": -9.1386, "km": 5}},
    {"near": {"lat": -33.87, "lon": 151.21, "km": 20000}},
    {"near": {"lat": 0.0, "lon": 179.9, "km": 15000}},  # a box across the antimeridian
]


@pytest.fixture(scope="module")
def photo_indexes(tmp_path_factory, tiny_encoder, pg_server):
    """The same photo library indexed into SQLite and into PostgreSQL -> (sqlite engine, pg engine)."""
    from photo_library import build_library
    from mmsearch.query import QueryEngine

    tmp_path = tmp_path_factory.mktemp("photos")
    pg_url = create_database(pg_server, f"photos_{uuid.uuid4().hex[:8]}")
    build_library(tmp_path / "photos", n=24)
    run_index(tmp_path / "photos", tmp_path / "lite", tiny_encoder)
    run_index(tmp_path / "photos", tmp_path / "pg", tiny_encoder, database_url=pg_url)
    lite, pg = _searcher(tmp_path / "lite", tiny_encoder, None), _searcher(tmp_path / "pg", tiny_encoder, pg_url)
    yield QueryEngine(lite), QueryEngine(pg)
    lite.close()
    pg.close()


@pytest.mark.parametrize("filt", PHOTO_FILTERS, ids=[json.dumps(f) for f in PHOTO_FILTERS])
def test_photo_filters_select_the_same_items_as_sqlite(photo_indexes, filt):
    from mmsearch.storage.filter_sql import candidate_sql
    from mmsearch.storage.filters import from_json

    def keys(engine) -> set[str]:
        where, params = candidate_sql(from_json(filt), ("image",), engine.store.dialect)
        with engine.store.engine.connect() as conn:
            ids = [int(r[0]) for r in conn.execute(sql(where), params)]
        return {os.path.basename(r.key) for r in engine.store.get_many(ids).values()}

    lite, pg = photo_indexes
    expected = keys(lite)
    assert expected
    assert keys(pg) == expected


def test_photo_keywords_and_date_histogram_match_sqlite(photo_indexes):
    from mmsearch.query import Query, Term
    from mmsearch.storage.fields import field_summary

    lite, pg = photo_indexes
    for words in ("Lisbon", "holiday", "Nikon", "Australia"):  # place, XMP tag (a list value), camera, country
        query = Query([Term(text=words)], mode="keyword", target="image", limit=100)
        got = {h.path for h in pg.run(query).hits}
        assert got and got == {h.path for h in lite.run(query).hits}, words
    assert field_summary(pg.store) == field_summary(lite.store)
    taken = next(f for f in field_summary(pg.store) if f["name"] == "taken")
    assert taken["histogram"] and sum(b["count"] for b in taken["histogram"]) == taken["count"]
