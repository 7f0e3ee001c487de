"""Collections: one server, several named indexes, created and dropped over the API or the CLI; a query of
one collection never returns another's items; the single-index routes keep serving the default one."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from mmsearch.api import create_app
from mmsearch.cli import main
from mmsearch.client import ApiError, Client
from mmsearch.config import Settings
from mmsearch.encoders import TEST_MODEL
from mmsearch.search import Searcher
from mmsearch.storage import collections as colls
from mmsearch.verify import verify_index

PRODUCTS = ["red running shoes", "blue denim jacket", "green garden hose", "silver wrist watch"]


@pytest.fixture()
def server(indexed, tiny_encoder):
    _, _, index_dir, _ = indexed
    searcher = Searcher(index_dir, tiny_encoder)
    with TestClient(create_app(Settings(index_dir=index_dir, model=TEST_MODEL), searcher=searcher)) as http:
        yield Client(http=http), index_dir
    searcher.close()


def test_collections_are_isolated(server):
    api, index_dir = server
    default_before = api.info()["counts"]
    for name, lang in (("shop_de", "de"), ("shop_fr", "fr")):
        made = api.create_collection(name, model=TEST_MODEL)
        assert made["name"] == name and made["counts"] == {"image": 0, "text": 0} and made["model"] == TEST_MODEL
        # the same keys in both collections, with texts of their own
        result = api.collection(name).bulk([{"key": f"sku-{i}", "text": f"{text} ({lang})", "metadata": {"lang": lang}}
                                            for i, text in enumerate(PRODUCTS)])
        assert result.counts == {"created": len(PRODUCTS)}
    assert [c["name"] for c in api.collections()] == ["default", "shop_de", "shop_fr"]
    assert (index_dir / "collections" / "shop_de" / "items.sqlite").is_file()

    for name, lang in (("shop_de", "de"), ("shop_fr", "fr")):
        shop = api.collection(name)
        for text in PRODUCTS:
            for query in (f"{text} (de)", f"{text} (fr)"):
                hits = shop.search(query, target="all", k=20)
                assert hits and {h["metadata"]["lang"] for h in hits} == {lang}, (name, query)
        assert {h["metadata"]["lang"] for h in shop.query("shoes", mode="keyword", target="all", limit=50)["hits"]} <= {lang}
        assert shop.get("sku-0")["items"][0]["text"] == f"red running shoes ({lang})"
        assert shop.info()["counts"] == {"image": 0, "text": len(PRODUCTS)}
    # the default collection (the plain /v1 routes) holds none of them
    assert api.info()["counts"] == default_before
    assert all("lang" not in h["metadata"] for h in api.search("red running shoes (de)", target="all", k=50))
    with pytest.raises(ApiError) as missing:
        api.get("sku-0")
    assert missing.value.status == 404

    # a write or delete in one collection leaves the other alone
    api.collection("shop_de").delete("sku-0")
    assert api.collection("shop_fr").get("sku-0")["items"][0]["text"] == "red running shoes (fr)"

    # a second server on the same directory serves the collections from disk
    searcher = Searcher(index_dir, api.http.app.state.searcher.encoder)
    with TestClient(create_app(Settings(index_dir=index_dir), searcher=searcher)) as http:
        other = Client(http=http)
        assert [c["name"] for c in other.collections()] == ["default", "shop_de", "shop_fr"]
        assert other.collection("shop_fr").search("green garden hose (fr)", target="text", k=1)[0]["metadata"]["key"] == "sku-2"
    searcher.close()

    api.drop_collection("shop_de")
    assert not (index_dir / "collections" / "shop_de").exists()
    with pytest.raises(ApiError) as dropped:
        api.collection("shop_de").search("shoes")
    assert dropped.value.status == 404
    assert [c["name"] for c in api.collections()] == ["default", "shop_fr"]
    for name in ("shop_fr",):
        assert verify_index(index_dir / "collections" / name).ok
    assert verify_index(index_dir).ok


@pytest.fixture()
def own_server(indexed):
    """A server that opens its indexes and loads the model itself, as `mmsearch serve` does."""
    _, _, index_dir, _ = indexed
    with TestClient(create_app(Settings(index_dir=index_dir, model=TEST_MODEL))) as http:
        yield Client(http=http), index_dir


def test_a_text_search_runs_nothing_on_the_threadpool(own_server, monkeypatch):
    """A text search, on the default routes or a collection's, awaits the batching worker on the event loop:
    no dependency may hop to the threadpool (a plain-def FastAPI dependency does, on every request)."""
    import anyio.to_thread

    api, _ = own_server
    api.create_collection("shop", model=TEST_MODEL)
    api.collection("shop").bulk([{"key": f"sku-{i}", "text": text} for i, text in enumerate(PRODUCTS)])
    hops: list[str] = []
    to_thread = anyio.to_thread.run_sync

    async def counting(func, *args, **kwargs):
        hops.append(getattr(getattr(func, "func", func), "__name__", repr(func)))  # through functools.partial
        return await to_thread(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    hits = api.collection("shop").search("red running shoes", target="text", k=2)
    assert hits[0]["text"] == "red running shoes"
    api.search("red running shoes", target="all", k=2)  # the default collection's route
    assert hops == []


def test_repeated_queries_come_from_the_query_cache_and_writes_do_not_fill_it(own_server):
    from mmsearch.metrics import QUERY_CACHE

    api, _ = own_server
    api.create_collection("shop", model=TEST_MODEL)
    shop = api.collection("shop")
    shop.bulk([{"key": f"sku-{i}", "text": text} for i, text in enumerate(PRODUCTS)])
    hits = QUERY_CACHE.labels(result="hit")
    before = hits._value.get()
    first = shop.search("red running shoes", target="text", k=2)
    assert hits._value.get() == before  # a product's text embedded by a write is not a cached query
    again = shop.search("red running shoes", target="text", k=2)
    assert hits._value.get() == before + 1 and again == first


def test_collection_names_and_errors(server):
    api, _ = server
    for bad in ("Shop", "1shop", "shop-de", "a" * 41):
        r = api.http.put(f"/v1/collections/{bad}", json={"model": TEST_MODEL})
        assert r.status_code == 422, bad
    api.create_collection("shop", model=TEST_MODEL)
    with pytest.raises(ApiError) as exists:
        api.create_collection("shop", model=TEST_MODEL)
    assert exists.value.status == 409
    with pytest.raises(ApiError) as default:
        api.drop_collection("default")
    assert default.value.status == 422 and "cannot be dropped" in default.value.message
    with pytest.raises(ApiError) as unknown:
        api.drop_collection("nothing_here")
    assert unknown.value.status == 404
    with pytest.raises(ApiError) as bad_type:
        api.create_collection("odd", model=TEST_MODEL, index_type="no-such-index")
    assert bad_type.value.status == 422 and "no-such-index" in bad_type.value.message


def test_collections_from_the_cli(tmp_path, corpus):
    root, files = corpus
    runner = CliRunner()
    index_dir = tmp_path / "srv"

    def run(*args: str) -> str:
        result = runner.invoke(main, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    assert "created collection photos" in run("collections", "create", "photos", "--model", TEST_MODEL, "--index-dir", str(index_dir))
    run("index", str(root), "--index-dir", str(index_dir), "--collection", "photos", "--workers", "0")
    out = run("search", "--index-dir", str(index_dir), "--collection", "photos", "--target", "text", "--json",
              files["bread"].read_text(encoding="utf-8"))
    assert json.loads(out.splitlines()[0])["hits"][0]["path"] == str(files["bread"].resolve())
    listed = json.loads(run("collections", "list", "--index-dir", str(index_dir), "--json"))
    assert [(c["name"], c["counts"]) for c in listed] == [("photos", {"image": 6, "text": 3})]
    run("verify", "--index-dir", str(index_dir), "--collection", "photos")
    assert json.loads(run("info", "--index-dir", str(index_dir), "--collection", "photos", "--json"))["counts"]["text"] == 3
    again = runner.invoke(main, ["collections", "create", "photos", "--model", TEST_MODEL, "--index-dir", str(index_dir)])
    assert again.exit_code == 1 and "already exists" in again.output
    bad = runner.invoke(main, ["collections", "create", "Photos!", "--index-dir", str(index_dir)])
    assert bad.exit_code == 1 and "not valid" in bad.output
    run("collections", "drop", "photos", "--yes", "--index-dir", str(index_dir))
    assert colls.list_names(index_dir) == [] and not (index_dir / "collections" / "photos").exists()
