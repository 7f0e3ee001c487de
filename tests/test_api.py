"""Every HTTP route round-trips; bad requests get 4xx with a JSON error body, never a 500."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mmsearch.api import create_app
from mmsearch.api.deps import get_searcher
from mmsearch.config import Settings
from mmsearch.search import Searcher


@pytest.fixture()
def client(indexed, tiny_encoder):
    _, files, index_dir, _ = indexed
    searcher = Searcher(index_dir, tiny_encoder)
    app = create_app(Settings(index_dir=index_dir, max_upload_bytes=200_000), searcher=searcher)
    with TestClient(app) as c:
        yield c, files, searcher


def png_bytes(path) -> bytes:
    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def test_health_and_info(client):
    c, _, _ = client
    assert c.get("/healthz").json() == {"status": "ok"}
    info = c.get("/v1/info").json()
    assert info["counts"] == {"image": 6, "text": 3} and info["dim"] == 64


def test_text_search(client):
    c, files, _ = client
    body = files["train"].read_text()
    r = c.post("/v1/search", json={"text": body, "target": "text", "k": 2})
    assert r.status_code == 200
    hits = r.json()["hits"]
    assert len(hits) == 2 and hits[0]["path"] == str(files["train"]) and hits[0]["score"] > 0.99


def test_image_search_by_upload(client):
    c, files, _ = client
    r = c.post("/v1/search/image", files={"file": ("q.png", png_bytes(files["img3"]), "image/png")}, data={"target": "image", "k": "3"})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert len(hits) == 3 and hits[0]["path"] == str(files["img3"])


def test_item_and_thumbnail(client):
    c, files, searcher = client
    item_id = {r.path: r.id for r in searcher.store.all_items()}[str(files["img0"])]
    item = c.get(f"/v1/items/{item_id}").json()
    assert item["path"] == str(files["img0"]) and item["text"] == "a caption for the first image"
    r = c.get(f"/v1/items/{item_id}/thumbnail")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(r.content))
    assert thumb.format == "JPEG" and max(thumb.size) <= 256


@pytest.mark.parametrize(
    "method,url,kwargs,status",
    [
        ("post", "/v1/search", {"json": {"text": ""}}, 422),
        ("post", "/v1/search", {"json": {"text": "   "}}, 422),
        ("post", "/v1/search", {"json": {"text": "x", "k": 0}}, 422),
        ("post", "/v1/search", {"json": {"text": "x", "k": 100000}}, 422),
        ("post", "/v1/search", {"json": {"text": "x", "target": "video"}}, 422),
        ("post", "/v1/search", {"content": b"not json", "headers": {"content-type": "application/json"}}, 422),
        ("post", "/v1/search", {"json": {"text": "x" * 5000}}, 422),
        ("post", "/v1/search/image", {"files": {"file": ("a.png", b"<html>not an image</html>", "image/png")}}, 422),
        ("post", "/v1/search/image", {"files": {"file": ("a.png", b"", "image/png")}}, 422),
        ("post", "/v1/search/image", {"files": {"file": ("a.png", b"\x89PNG" + b"0" * 300_000, "image/png")}}, 413),
        ("post", "/v1/search/image", {}, 422),
        ("get", "/v1/items/999999", {}, 404),
        ("get", "/v1/items/-1", {}, 422),
        ("get", "/v1/items/abc", {}, 422),
        ("get", "/v1/items/999999/thumbnail", {}, 404),
        ("get", "/v1/nothing-here", {}, 404),
    ],
)
def test_bad_requests_get_4xx_json(client, method, url, kwargs, status):
    c, _, _ = client
    r = getattr(c, method)(url, **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in r.text


def test_thumbnail_of_text_item_is_404(client):
    c, files, searcher = client
    text_id = {r.path: r.id for r in searcher.store.all_items()}[str(files["sea"])]
    assert c.get(f"/v1/items/{text_id}/thumbnail").status_code == 404


def test_dependency_override(indexed, tiny_encoder):
    _, _, index_dir, _ = indexed

    class FakeSearcher:
        def info(self):
            return {"index_dir": "x", "model": "m", "model_id": "m", "dim": 1, "generation": 0,
                    "counts": {"image": 0, "text": 0}, "index_factory": {}, "device": None}

    app = create_app(Settings(index_dir=index_dir), searcher=Searcher(index_dir, tiny_encoder))
    app.dependency_overrides[get_searcher] = lambda: FakeSearcher()
    with TestClient(app) as c:
        assert c.get("/v1/info").json()["model"] == "m"
