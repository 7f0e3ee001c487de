"""The --where syntax, the FAISS search restricted to an id set, and product search from the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from catalogue_data import make_products, write_catalogue
from conftest import pattern_image, run_index
from mmsearch.cli import main
from mmsearch.cli_shop import parse_term
from mmsearch.errors import InvalidQueryError
from mmsearch.storage.filters import Condition, parse_where
from mmsearch.vectors.index import VectorIndex


@pytest.mark.parametrize("expr,conditions", [
    ("brand = Acme", [Condition("brand", "eq", "Acme")]),
    ("brand == 'Acme Co'", [Condition("brand", "eq", "Acme Co")]),
    ("brand != Acme", [Condition("brand", "ne", "Acme")]),
    ("price <= 80", [Condition("price", "lte", 80)]),
    ("price>12.5", [Condition("price", "gt", 12.5)]),
    ("price between 10 and 80", [Condition("price", "gte", 10), Condition("price", "lte", 80)]),
    ("category in [bags, shoes]", [Condition("category", "in", ("bags", "shoes"))]),
    ("category IN [bags,'evening shoes']", [Condition("category", "in", ("bags", "evening shoes"))]),
    ("category not in [hats]", [Condition("category", "nin", ("hats",))]),
    ("released >= 2024-01-01", [Condition("released", "gte", "2024-01-01")]),
    ("sku = 00123", [Condition("sku", "eq", "00123")]),
    ("sku = '42'", [Condition("sku", "eq", "42")]),
    ("colour exists", [Condition("colour", "exists", True)]),
    ("colour not exists", [Condition("colour", "exists", False)]),
])
def test_where_syntax(expr, conditions):
    assert parse_where(expr) == conditions


@pytest.mark.parametrize("expr", ["", "price", "price <=", "= 3", "category in []", "price ~ 3", 'a"b = 1'])
def test_bad_where_is_one_clear_error(expr):
    with pytest.raises(InvalidQueryError):
        parse_where(expr)


def test_term_syntax(tmp_path):
    assert (parse_term("0.5:red dress").weight, parse_term("0.5:red dress").text) == (0.5, "red dress")
    assert (parse_term("-1:long sleeves").weight, parse_term("-1:long sleeves").text) == (-1.0, "long sleeves")
    assert (parse_term("plain words").weight, parse_term("plain words").text) == (1.0, "plain words")
    assert parse_term("2:item:17").item_id == 17 and parse_term("2:item:17").weight == 2
    pattern_image(1).save(tmp_path / "q.png")
    assert parse_term(f"image:{tmp_path / 'q.png'}").image.size == (96, 80)
    with pytest.raises(InvalidQueryError):
        parse_term("1:item:abc")


def test_subset_search_returns_exact_top_k_inside_the_set():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(10_000, 10_500, dtype=np.int64)
    index = VectorIndex(16)
    index.add(ids, vectors)
    allowed = ids[rng.choice(500, size=40, replace=False)]
    query = vectors[3]
    scores, found = index.search_subset(query, 10, allowed)
    brute = sorted(allowed.tolist(), key=lambda i: -float(vectors[i - 10_000] @ query))[:10]
    assert found[0].tolist() == brute
    _, few = index.search_subset(query, 100, allowed[:5])
    assert sorted(few[0].tolist()) == sorted(allowed[:5].tolist())


@pytest.fixture(scope="module")
def cli_shop(tmp_path_factory, tiny_encoder):
    root = tmp_path_factory.mktemp("clishop")
    path = write_catalogue(root / "catalogue", make_products(12))
    run_index(path, root / "idx", tiny_encoder)
    return root / "idx", path


def run_cli(*args):
    result = CliRunner().invoke(main, list(args))
    return result


def test_cli_filters_modes_and_grouping(cli_shop, monkeypatch):
    index_dir, _ = cli_shop
    monkeypatch.setenv("MMSEARCH_DEVICE", "cpu")
    result = run_cli("search", "red leather handbag", "--index-dir", str(index_dir), "--target", "all", "--group",
                     "--where", "price <= 80", "--where", "category in [bags, shoes, hats]", "--mode", "hybrid",
                     "--minus", "blue", "-k", "50", "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    hits = body["hits"]
    assert hits and body["mode"] == "hybrid"
    assert all(h["metadata"]["price"] <= 80 and h["metadata"]["category"] in ("bags", "shoes", "hats") for h in hits)
    assert len({h["product"] for h in hits}) == len(hits)

    text = run_cli("search", "SKU-0003", "--index-dir", str(index_dir), "--mode", "keyword", "--target", "all", "--group")
    assert text.exit_code == 0, text.output
    lines = [line for line in text.output.splitlines() if not line.startswith("#")]
    assert len(lines) == 1 and "SKU-0003" in lines[0] and "EUR" in lines[0]


def test_cli_weighted_terms_and_more_like_this(cli_shop):
    index_dir, _ = cli_shop
    result = run_cli("search", "--index-dir", str(index_dir), "--term", "0.5:red dress", "--term=-1:long sleeves",
                     "--target", "text", "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)["hits"]) == 10
    like = run_cli("search", "--index-dir", str(index_dir), "--like", "1", "--target", "all", "-k", "3", "--json")
    assert like.exit_code == 0, like.output
    assert 1 not in {h["id"] for h in json.loads(like.output)["hits"]}


@pytest.mark.parametrize("args,needle", [
    (["x", "--where", "price ~ 3"], "cannot read filter"),
    (["--minus", "blue"], "give something to search for"),
    (["--queries-file", "q.txt", "--where", "price < 3"], "cannot be combined"),
    (["x", "--mode", "keyword", "--where", "bad\"field = 1"], "cannot read filter"),
])
def test_cli_errors_are_one_line(cli_shop, args, needle):
    index_dir, _ = cli_shop
    result = run_cli("search", "--index-dir", str(index_dir), *args)
    assert result.exit_code == 1
    assert needle in result.output and "Traceback" not in result.output


def test_cli_index_catalogue_flag(tmp_path, tiny_encoder, monkeypatch):
    path = write_catalogue(tmp_path / "shop", make_products(2))
    monkeypatch.setattr("mmsearch.encoders.load_encoder", lambda *a, **k: tiny_encoder)
    result = run_cli("index", str(path), "--index-dir", str(tmp_path / "idx"), "--catalogue", "--model", "mmsearch-tiny-random")
    assert result.exit_code == 0, result.output
    assert "2 texts" in result.output


def test_list_valued_and_mixed_type_fields(tmp_path):
    from sqlalchemy import text as sql

    from mmsearch.storage.filter_sql import candidate_sql
    from mmsearch.storage.filters import from_json
    from mmsearch.storage.store import NewItem, Store

    store = Store.at(tmp_path / "items.sqlite")
    metas = [{"tags": ["a", "b"], "size": [38, 40]}, {"tags": "a", "size": 42}, {}, {"tags": 5, "size": "40"}, {"tags": None}]
    store.write_batch([NewItem(f"k{i}", "text", None, f"h{i}", 0, 0.0, "t", m) for i, m in enumerate(metas)], np.eye(5, 4, dtype=np.float32))

    def ids(filt):
        where, params = candidate_sql(from_json(filt), ("text",))
        with store.engine.connect() as conn:
            return sorted(int(r[0]) - 1 for r in conn.execute(sql(where), params))

    assert ids({"tags": "a"}) == [0, 1]
    assert ids({"tags": ["b", 5]}) == [0, 3]
    assert ids({"tags": {"ne": "a"}}) == [2, 3, 4]
    assert ids({"tags": {"nin": ["a", "b"]}}) == [2, 3, 4]
    assert ids({"tags": {"exists": True}}) == [0, 1, 3]
    assert ids({"size": {"gte": 40}}) == [0, 1]  # any element of the list; the text "40" is not a number
    assert ids({"size": {"gte": "4"}}) == [3]
    assert ids({"size": {"lt": 39}, "tags": "b"}) == [0]
    assert ids({"modality": "text"}) == [0, 1, 2, 3, 4] and ids({"modality": {"ne": "text"}}) == []
