"""Scoped API keys over HTTP, metrics and health: 401 without a valid key, 403 outside its scope or
collection, every route declaring the scope it needs, /metrics per route template, /readyz vs /healthz."""

from __future__ import annotations

import re
import time

import pytest
from fastapi import APIRouter, Depends
from fastapi.testclient import TestClient

from mmsearch.api import create_app
from mmsearch.api.auth import API_KEY_HEADER, UNAUTHORIZED, require, unguarded_routes
from mmsearch.config import Settings
from mmsearch.metrics import set_write_queue_depth
from mmsearch.search import Searcher
from mmsearch.storage.apikeys import KeyStore, Scope


@pytest.fixture()
def served(indexed, tiny_encoder):
    """-> (index_dir, factory(**settings) -> TestClient) over the small indexed corpus."""
    _, _, index_dir, _ = indexed
    searcher = Searcher(index_dir, tiny_encoder)
    clients = []

    def make(**overrides) -> TestClient:
        client = TestClient(create_app(Settings(index_dir=index_dir, **overrides), searcher=searcher))
        client.__enter__()
        clients.append(client)
        return client

    yield index_dir, make
    for client in clients:
        client.__exit__(None, None, None)
    searcher.close()


def _search(c: TestClient, key: str | None, **kwargs):
    headers = {API_KEY_HEADER: key} if key else {}
    return c.post("/v1/search", json={"text": "trains"}, headers=headers, **kwargs)


def test_keys_of_each_scope_and_collection(served):
    index_dir, make = served
    store = KeyStore.beside(index_dir)
    _, read_default = store.create(Scope.READ, "default")
    _, write_other = store.create(Scope.WRITE, "shop-de")
    _, read_global = store.create(Scope.READ)
    _, revoked = store.create(Scope.ADMIN)
    store.revoke(revoked.split("_")[1])
    c = make()
    assert _search(c, read_default).status_code == 200
    assert _search(c, read_global).status_code == 200
    assert c.get("/v1/info", headers={"Authorization": f"Bearer {read_global}"}).status_code == 200
    # a valid key for another collection: 403, saying what the key may do
    r = _search(c, write_other)
    assert r.status_code == 403 and r.json() == {"error": r.json()["error"]}
    assert "shop-de" in r.json()["error"] and "'default'" in r.json()["error"] and "mms_" not in r.text
    for key in (None, revoked, read_default + "x", "mms_" + "0" * 12 + "_guess"):
        r = _search(c, key)
        assert r.status_code == 401 and r.json() == {"error": UNAUTHORIZED}, key
        assert r.headers["www-authenticate"] == API_KEY_HEADER
    # metrics show every collection: a global key only
    assert c.get("/metrics", headers={API_KEY_HEADER: read_default}).status_code == 403
    assert c.get("/metrics", headers={API_KEY_HEADER: read_global}).status_code == 200
    assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200


def test_a_new_key_turns_auth_on_and_revoking_takes_effect_without_restart(served):
    index_dir, make = served
    c = make(reload_interval=0.1)
    assert _search(c, None).status_code == 200  # no key anywhere: open, as before
    store = KeyStore.beside(index_dir)
    key, secret = store.create(Scope.READ)
    _wait_for(lambda: _search(c, None).status_code == 401)
    assert _search(c, secret).status_code == 200
    store.revoke(key.id)
    _wait_for(lambda: _search(c, secret).status_code == 401)


def _wait_for(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the server did not pick up the key change"
        time.sleep(0.1)


def _operations(c: TestClient) -> list[tuple[str, str]]:
    """Every (method, concrete path) in the OpenAPI schema, path parameters filled (collection: default)."""
    image_id = next(r.id for r in c.app.state.searcher.store.all_items() if r.modality == "image")
    fill = {"collection": "default", "name": "default"}
    return [(method, re.sub(r"\{([^}]+)\}", lambda m: fill.get(m.group(1), str(image_id)), path))
            for path, methods in c.app.openapi()["paths"].items() for method in methods]


def test_every_route_refuses_a_key_of_another_collection(served):
    """Enforced on every route the app serves (the write API's and collections' routes too, once there)."""
    index_dir, make = served
    _, elsewhere = KeyStore.beside(index_dir).create(Scope.ADMIN, "elsewhere")
    c = make()
    checked = 0
    for method, path in _operations(c):
        r = c.request(method.upper(), path, headers={API_KEY_HEADER: elsewhere})
        if path in ("/healthz", "/readyz"):
            assert r.status_code == 200
            continue
        assert r.status_code == 403, (method, path, r.status_code, r.text[:200])
        assert "may not" in r.json()["error"] and "Traceback" not in r.text
        checked += 1
    assert checked >= 7
    for path in ("/", "/docs", "/openapi.json"):  # pages outside the API schema need a valid key, any collection's
        assert c.get(path).status_code == 401
        assert c.get(path, headers={API_KEY_HEADER: elsewhere}).status_code in (200, 403)


def test_scopes_are_ordered_on_routes(served):
    """A route that needs write takes write and admin keys, not read; admin routes take admin only
    (the write API's routes declare these with require)."""
    index_dir, make = served
    store = KeyStore.beside(index_dir)
    secrets = {scope: store.create(scope, "shop")[1] for scope in Scope}
    c = make()
    extra = APIRouter()

    @extra.put("/scope-test/{name}/items/{key}", dependencies=[Depends(require("write"))])
    async def put_item(name: str, key: str) -> dict:
        return {"ok": True}

    @extra.delete("/scope-test/{name}", dependencies=[Depends(require(Scope.ADMIN))])
    async def drop(name: str) -> dict:
        return {"ok": True}

    c.app.include_router(extra)
    expected = {Scope.READ: (403, 403), Scope.WRITE: (200, 403), Scope.ADMIN: (200, 200)}
    for scope, (write_status, admin_status) in expected.items():
        headers = {API_KEY_HEADER: secrets[scope]}
        assert c.put("/scope-test/shop/items/sku-1", headers=headers).status_code == write_status, scope
        assert c.delete("/scope-test/shop", headers=headers).status_code == admin_status, scope
        assert c.put("/scope-test/other/items/sku-1", headers=headers).status_code == 403, scope


def test_a_route_without_a_scope_stops_the_server(served):
    _, make = served
    c = make()
    assert unguarded_routes(c.app, frozenset({"/healthz", "/readyz"})) == []
    app = create_app(Settings(index_dir=served[0]), searcher=c.app.state.searcher)

    @app.get("/v1/forgotten")
    def forgotten() -> dict:
        return {}

    with pytest.raises(RuntimeError, match="/v1/forgotten"):
        with TestClient(app):
            pass


def _metric(text: str, name: str, **labels) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_count_requests_per_route_template(served):
    _, make = served
    c = make(metrics_public=True)
    before = c.get("/metrics").text
    item_ids = [h["id"] for h in _search(c, None).json()["hits"]][:3]
    for item_id in item_ids:
        assert c.get(f"/v1/items/{item_id}").status_code == 200
    c.get("/v1/items/99999999")
    set_write_queue_depth("default", 7)
    text = c.get("/metrics").text
    route = "/v1/items/{item_id}"
    grew = (_metric(text, "mmsearch_http_requests_total", route=route, status="200") or 0) - \
        (_metric(before, "mmsearch_http_requests_total", route=route, status="200") or 0)
    assert grew == len(item_ids)
    assert _metric(text, "mmsearch_http_requests_total", route=route, status="404") >= 1
    assert not re.search(r'route="/v1/items/\d', text), "raw paths must not become labels"
    assert _metric(text, "mmsearch_http_request_duration_seconds_count", route="/v1/search", method="POST") >= 1
    searcher = c.app.state.searcher
    counts = searcher.info()["counts"]
    assert _metric(text, "mmsearch_index_items", collection="default", modality="image") == counts["image"]
    assert _metric(text, "mmsearch_index_items", collection="default", modality="text") == counts["text"]
    assert _metric(text, "mmsearch_index_generation", collection="default") == searcher.info()["generation"]
    assert _metric(text, "mmsearch_write_queue_depth", collection="default") == 7
    unmatched = _metric(c.get("/metrics").text, "mmsearch_http_requests_total", route="unmatched", status="404") or 0
    c.get("/no/such/path")
    assert _metric(c.get("/metrics").text, "mmsearch_http_requests_total", route="unmatched", status="404") == unmatched + 1


def test_embedding_time_is_measured_in_the_serving_encoder(tiny_encoder):
    from mmsearch.batching import BatchingEncoder
    from mmsearch.metrics import EMBED_ITEMS, EMBED_SECONDS

    before = EMBED_ITEMS.labels(kind="text")._value.get()
    encoder = BatchingEncoder(tiny_encoder)
    try:
        encoder.encode_texts(["a red apple", "a train"])
    finally:
        encoder.close()
    assert EMBED_ITEMS.labels(kind="text")._value.get() == before + 2
    assert EMBED_SECONDS.labels(kind="text")._sum.get() > 0


def test_query_embedding_cache_skips_the_model_for_repeats(tiny_encoder):
    from mmsearch.querycache import CachedTextEncoder

    calls = []

    class Counting:
        dim = tiny_encoder.dim

        def encode_texts(self, texts):
            calls.append(list(texts))
            return tiny_encoder.encode_texts(texts)

    cached = CachedTextEncoder(Counting(), size=2)
    first = cached.encode_texts(["red apple", "train", "red apple"])
    again = cached.encode_texts(["train", "red apple"])
    assert calls == [["red apple", "train"]]
    assert (again[0] == first[1]).all() and (again[1] == first[0]).all()
    cached.encode_texts(["boat"])  # evicts the least recently used ("train")
    cached.encode_texts(["train"])
    assert calls[-1] == ["train"]
    again[:] = 0  # a caller's array is its own: the cached vectors stay as they were
    assert (cached.encode_texts(["red apple"])[0] == first[0]).all() and first[0].any()


def test_readiness_is_separate_from_liveness(served):
    _, make = served
    c = make()
    assert c.get("/healthz").json() == {"status": "ok"}
    assert c.get("/readyz").json() == {"status": "ready", "checks": {"index": True, "model": True}}
    c.app.state.readiness_checks["writer"] = lambda: False  # a part of the app that is not ready
    r = c.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["writer"] is False and r.json()["status"] == "not ready"
    assert c.get("/healthz").status_code == 200  # alive all the same: no restart for a dependency


def test_readiness_before_the_collections_open(indexed, tiny_encoder):
    _, _, index_dir, _ = indexed
    app = create_app(Settings(index_dir=index_dir), searcher=Searcher(index_dir, tiny_encoder))
    c = TestClient(app)  # no lifespan run: nothing opened yet
    assert c.get("/healthz").status_code == 200
    r = c.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"] == {"index": False, "model": False}
