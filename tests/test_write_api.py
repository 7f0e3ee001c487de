"""The write API through the Python client: upsert/replace/delete by key, bulk NDJSON with per-row results,
unchanged items not embedded again, uploaded images kept for thumbnails, and writes visible to searches
within a second while 8 clients search a live server."""

from __future__ import annotations

import base64
import json
import io
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from conftest import pattern_image
from live_server import LiveServer
from mmsearch.api import create_app
from mmsearch.batching import BatchingEncoder
from mmsearch.client import ApiError, Client
from mmsearch.config import Settings
from mmsearch.search import Searcher
from mmsearch.verify import verify_index


class CountingEncoder:
    """The tiny model, counting what it is asked to embed."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.texts: list[str] = []
        self.images = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_texts(self, texts):
        self.texts.extend(texts)
        return self.inner.encode_texts(texts)

    def encode_images(self, images):
        self.images += len(images)
        return self.inner.encode_images(images)


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    pattern_image(seed).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def served(indexed, tiny_encoder):
    _, _, index_dir, _ = indexed
    encoder = CountingEncoder(tiny_encoder)
    searcher = Searcher(index_dir, BatchingEncoder(encoder), reload_interval=0)  # as a server does: every model call on one thread
    app = create_app(Settings(index_dir=index_dir, max_upload_bytes=500_000), searcher=searcher)
    with TestClient(app) as http:
        yield Client(http=http), encoder, index_dir, searcher
    searcher.encoder.close()
    searcher.close()


def _keys(hits: list[dict]) -> list[str]:
    return [h["metadata"].get("key") for h in hits]


def test_upsert_replace_delete_round_trip_by_key(served):
    api, encoder, index_dir, searcher = served
    created = api.upsert("SKU-1", text="a wooden rocking horse for toddlers", metadata={"price": 49.5, "brand": "Acme"})
    assert created["status"] == "created" and set(created["ids"]) == {"text"}
    hits = api.search("a wooden rocking horse for toddlers", target="text", k=3)
    assert hits[0]["id"] == created["ids"]["text"]
    assert hits[0]["metadata"] == {"price": 49.5, "brand": "Acme", "key": "SKU-1", "product": "SKU-1"}

    # the same item again: nothing embedded, nothing written
    embedded = len(encoder.texts)
    again = api.upsert("SKU-1", text="a wooden rocking horse for toddlers", metadata={"price": 49.5, "brand": "Acme"})
    assert again["status"] == "unchanged" and again["generation"] == created["generation"] and len(encoder.texts) == embedded

    # a new price only: metadata updated in place, still nothing embedded
    repriced = api.upsert("SKU-1", text="a wooden rocking horse for toddlers", metadata={"price": 39.0, "brand": "Acme"})
    assert repriced["status"] == "updated" and repriced["ids"] == created["ids"] and len(encoder.texts) == embedded
    assert api.query("rocking horse", filter={"price": {"lte": 40}}, target="text")["hits"][0]["metadata"]["key"] == "SKU-1"

    # a new text and a picture: the text re-embedded under the same id, the image added, its file kept for thumbnails
    replaced = api.upsert("SKU-1", text="a red fire engine with a ladder", metadata={"price": 39.0}, image=png(7))
    assert replaced["status"] == "updated" and replaced["ids"]["text"] == created["ids"]["text"] and "image" in replaced["ids"]
    assert encoder.texts[-1] == "a red fire engine with a ladder"
    assert api.search("a red fire engine with a ladder", target="text", k=1)[0]["id"] == created["ids"]["text"]
    assert "SKU-1" not in _keys(api.search("a wooden rocking horse for toddlers", target="text", k=20)[:1])
    image_hits = api.search_image(png(7), target="image", k=1)
    assert image_hits[0]["id"] == replaced["ids"]["image"] and image_hits[0]["text"] == "a red fire engine with a ladder"
    thumb = api.http.get(f"/v1/items/{replaced['ids']['image']}/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    stored = api.get("SKU-1")
    assert [i["modality"] for i in stored["items"]] == ["text", "image"] and stored["items"][1]["path"] is None
    upload = Path(searcher.store.get(replaced["ids"]["image"]).path)
    assert upload.is_file() and upload.parent.parent.name == "uploads"

    # replaced by a text-only item: the image item and its file go
    text_only = api.upsert("SKU-1", text="a red fire engine with a ladder", metadata={"price": 39.0})
    assert set(text_only["ids"]) == {"text"} and not upload.exists()
    with pytest.raises(ApiError) as gone:
        api.item(replaced["ids"]["image"])
    assert gone.value.status == 404

    deleted = api.delete("SKU-1")
    assert deleted["status"] == "deleted"
    assert "SKU-1" not in _keys(api.search("a red fire engine with a ladder", target="all", k=50))
    for call in (lambda: api.get("SKU-1"), lambda: api.delete("SKU-1")):
        with pytest.raises(ApiError) as missing:
            call()
        assert missing.value.status == 404 and "SKU-1" in missing.value.message
    assert verify_index(index_dir).ok


def test_item_images_by_base64_and_invalid_bodies(served):
    api, _, _, _ = served
    r = api.http.put("/v1/items/b64", json={"text": "pattern", "image_b64": "data:image/png;base64," + base64.b64encode(png(3)).decode()})
    assert r.status_code == 200 and set(r.json()["ids"]) == {"text", "image"}
    image_only = api.http.put("/v1/items/img-only", json={"image_b64": base64.b64encode(png(4)).decode()})
    assert image_only.status_code == 200 and set(image_only.json()["ids"]) == {"image"}
    bad = {
        "no content": ({"metadata": {"a": 1}}, "needs text or an image"),
        "two images": ({"text": "x", "image_b64": "AAAA", "image_url": "http://example.com/a.png"}, "one image"),
        "bad base64": ({"text": "x", "image_b64": "not base64!"}, "not valid base64"),
        "not an image": ({"text": "x", "image_b64": base64.b64encode(b"<html></html>").decode()}, "not readable"),
        "metadata not an object": ({"text": "x", "metadata": [1, 2]}, "metadata"),
    }
    for name, (body, reason) in bad.items():
        r = api.http.put("/v1/items/bad", json=body)
        assert r.status_code == 422 and reason in r.json()["error"], (name, r.text)
    assert api.http.put("/v1/items/bad", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    too_big = api.http.put("/v1/items/big", files={"file": ("x.png", b"\x89PNG" + b"0" * 600_000, "image/png")})
    assert too_big.status_code == 413
    assert api.http.put("/v1/items/%01ctrl", json={"text": "x"}).status_code == 422  # control characters are no key
    with pytest.raises(ApiError):
        api.get("bad")  # nothing of the refused writes was stored


def test_bulk_reports_bad_rows_and_keeps_good_rows(served):
    api, encoder, index_dir, _ = served
    api.upsert("old-1", text="an item that the bulk request deletes")
    rows = [
        {"key": "p1", "text": "green garden hose thirty metres", "metadata": {"category": "garden"}},
        {"key": "p2", "text": "stainless steel kitchen knife"},
        {"key": "p3"},  # nothing to index
        {"key": "p/4", "text": "a slash is not allowed in a key"},
        {"key": "p5", "text": "x", "image_b64": "%%%"},
        {"key": "p6", "image": png(11), "text": "a patterned tile", "metadata": {"category": "tiles"}},
        {"key": "old-1", "delete": True},
        {"key": "never-was", "delete": True},
        {"key": "p1", "text": "green garden hose fifty metres", "metadata": {"category": "garden"}},  # the same key again, later
    ]
    lines = [json.dumps(r if "image" not in r else {**{k: v for k, v in r.items() if k != "image"},
                                                                   "image_b64": base64.b64encode(r["image"]).decode()}) for r in rows]
    lines.insert(3, "{this is not json")
    r = api.http.post("/v1/items:bulk", content="\n".join(lines).encode() + b"\n\n", headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    out = [json.loads(line) for line in r.text.splitlines()]
    results, summary = out[:-1], out[-1]
    by_line = {row["line"]: row for row in results}
    assert [row["line"] for row in results] == list(range(1, 11))  # one result per non-empty line, in order
    assert by_line[1]["status"] == "created" and by_line[2]["status"] == "created"
    assert by_line[3]["status"] == "error" and "needs text or an image" in by_line[3]["error"]
    assert by_line[4] == {"line": 4, "key": None, "status": "error", "error": "not a JSON object"}
    assert by_line[5]["status"] == "error" and by_line[5]["key"] == "p/4" and "key" in by_line[5]["error"]
    assert by_line[6]["status"] == "error" and "base64" in by_line[6]["error"]
    assert by_line[7]["status"] == "created" and set(by_line[7]["ids"]) == {"text", "image"}
    assert by_line[8]["status"] == "deleted" and by_line[9]["status"] == "not_found"
    assert by_line[10]["status"] == "updated" and by_line[10]["ids"] == by_line[1]["ids"]  # applied after line 1
    assert summary == {"done": True, "rows": 10, "counts": {"created": 3, "error": 4, "deleted": 1, "not_found": 1, "updated": 1}}

    assert _keys(api.search("green garden hose fifty metres", target="text", k=1)) == ["p1"]
    assert api.query("a patterned tile", filter={"category": "tiles"}, target="image")["hits"][0]["metadata"]["key"] == "p6"
    for gone in ("old-1", "p3", "p/4", "p5"):
        with pytest.raises(ApiError):
            api.get(gone.replace("/", "_"))

    # the client's bulk: the same per-row results, images given as bytes
    result = api.bulk([{"key": "c1", "text": "a brass door knob"}, {"key": "c2", "image": png(12)}, {"key": "c3"}])
    assert result.complete and [r["status"] for r in result.rows] == ["created", "created", "error"]
    assert result.counts == {"created": 2, "error": 1} and len(result.errors) == 1
    assert api.bulk([{"key": "c1", "text": "a brass door knob"}]).rows[0]["status"] == "unchanged"
    assert verify_index(index_dir).ok


def test_bulk_of_thousands_of_rows(served):
    api, encoder, _, _ = served
    rows = [{"key": f"t{i}", "text": f"row {i}", "metadata": {"n": i}} for i in range(2000)]
    before = api.info()["generation"]
    result = api.bulk(rows)
    assert result.complete and result.counts == {"created": 2000}
    assert [r["key"] for r in result.rows] == [f"t{i}" for i in range(2000)]
    assert api.query("row 1234", filter={"n": 1234}, target="text")["hits"][0]["metadata"]["key"] == "t1234"
    # written in batches (one transaction and one published generation each), not row by row
    assert api.info()["generation"] - before <= 2000 // 128 + 1
    embedded = len(encoder.texts)
    assert api.bulk(rows).counts == {"unchanged": 2000} and len(encoder.texts) == embedded


def test_empty_bulk_and_missing_collection(served):
    api, _, _, _ = served
    r = api.http.post("/v1/items:bulk", content=b"\n \n", headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 422
    with pytest.raises(ApiError) as missing:
        api.collection("nope").upsert("k", text="x")
    assert missing.value.status == 404 and "nope" in missing.value.message


def test_writes_visible_within_a_second_while_8_clients_search(indexed, tiny_encoder):
    _, _, index_dir, _ = indexed
    searcher = Searcher(index_dir, BatchingEncoder(tiny_encoder), reload_interval=2.0)
    searcher.batch_text_queries()
    app = create_app(Settings(index_dir=index_dir, request_timeout=60), searcher=searcher)
    errors: list[str] = []
    searches = [0]
    stop = threading.Event()
    with LiveServer(app) as server:

        def search_loop(n: int) -> None:
            with Client(server.url) as api:
                while not stop.is_set():
                    try:
                        api.search(f"query {n} about trains", target="all", k=5)
                        searches[0] += 1
                    except Exception as exc:  # any failure is a test failure
                        errors.append(repr(exc))

        clients = [threading.Thread(target=search_loop, args=(n,)) for n in range(8)]
        for t in clients:
            t.start()
        delays = []
        try:
            with Client(server.url) as writer, Client(server.url) as reader:
                writer.upsert("warm-up", text="the first write starts the collection's writer")  # not steady state
                deadline = time.monotonic() + 6
                n = 0
                while time.monotonic() < deadline:
                    text = f"freshly written product number {n} with a unique name zq{n}x"
                    started = time.monotonic()
                    writer.upsert(f"live-{n}", text=text, metadata={"n": n})
                    while reader.search(text, target="text", k=1)[0]["metadata"].get("key") != f"live-{n}":
                        assert time.monotonic() - started < 5, f"live-{n} not visible after 5 s"
                        time.sleep(0.01)
                    delays.append(time.monotonic() - started)
                    n += 1
        finally:
            stop.set()
            for t in clients:
                t.join(30)
        searcher.encoder.close()
        searcher.close()
    assert not errors, errors[:3]
    assert len(delays) >= 10 and searches[0] >= 50
    assert max(delays) < 1.0, f"slowest write-to-visible {max(delays):.3f}s over {len(delays)} writes"
