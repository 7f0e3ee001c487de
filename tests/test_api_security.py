"""HTTP hardening: auth, CORS, body and time budgets, bounds, content sniffing, no path escapes, and
error bodies that leak neither stack traces nor filesystem paths."""

from __future__ import annotations

import io
import re
import threading
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mmsearch.api import create_app
from mmsearch.api.security import API_KEY_HEADER, redact_paths
from mmsearch.config import Settings
from mmsearch.errors import IndexCorruptError
from mmsearch.search import Searcher

KEY = "s3cret-key-for-tests"
SECRET_TOKEN = "TOP-SECRET-7f3a9c"
TRAVERSALS = [
    "../../../../../../etc/passwd",
    "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "..%252F..%252Fetc%252Fpasswd",
    "....//....//....//etc/passwd",
    "..\\..\\..\\windows\\win.ini",
    "/etc/passwd",
    "file:///etc/passwd",
    "%00../../etc/passwd",
    "1/../../../../etc/passwd",
    "1%2F..%2F..%2Fsecret.txt",
]


def png_bytes(size=(32, 32), colour="red", fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture()
def make_client(indexed, tiny_encoder):
    """-> factory(**settings) giving a TestClient over the small indexed corpus."""
    _, files, index_dir, _ = indexed
    searcher = Searcher(index_dir, tiny_encoder)
    clients = []

    def make(searcher_override=None, raise_server_exceptions=True, **overrides) -> TestClient:
        settings = Settings(index_dir=index_dir, **overrides)
        client = TestClient(create_app(settings, searcher=searcher_override or searcher),
                            raise_server_exceptions=raise_server_exceptions)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)
    searcher.close()


def _operations(client: TestClient) -> list[tuple[str, str]]:
    """Every (method, concrete path) the app serves, with path parameters filled in (an image item)."""
    image_id = next(r.id for r in client.app.state.searcher.store.all_items() if r.modality == "image")
    ops = []
    for path, methods in client.app.openapi()["paths"].items():
        for method in methods:
            ops.append((method, re.sub(r"\{[^}]+\}", lambda _: str(image_id), path)))
    return ops + [("get", "/docs"), ("get", "/openapi.json")]


def _request(client: TestClient, method: str, path: str, **kwargs):
    if method == "post" and path == "/v1/search":
        kwargs.setdefault("json", {"text": "trains"})
    if method == "post" and path == "/v1/search/image":
        kwargs.setdefault("files", {"file": ("q.png", png_bytes(), "image/png")})
    if method == "put" and path.startswith("/v1/items/"):
        kwargs.setdefault("json", {"text": "a written item"})
    if method == "delete" and path.startswith("/v1/items/"):  # something to delete
        client.put(path, json={"text": "an item to delete"}, headers=kwargs.get("headers"))
    if method == "post" and path == "/v1/items:bulk":
        kwargs.setdefault("content", b'{"key": "bulk-1", "text": "a bulk item"}\n')
    return client.request(method.upper(), path, **kwargs)


# --- API key ---

def test_api_key_guards_every_route_but_health_checks(make_client, monkeypatch):
    import mmsearch.storage.apikeys as apikeys

    compared = []
    real = apikeys.hmac.compare_digest
    monkeypatch.setattr(apikeys.hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))
    c = make_client(api_key=KEY)
    assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
    for method, path in _operations(c):
        if path in ("/healthz", "/readyz"):
            continue
        for headers in ({}, {API_KEY_HEADER: "wrong"}, {API_KEY_HEADER: KEY[:-1]}, {API_KEY_HEADER: KEY + "x"},
                        {"Authorization": "Bearer wrong"}):
            r = _request(c, method, path, headers=headers)
            assert r.status_code == 401, (method, path, headers, r.status_code)
            assert "API key" in r.json()["error"]
        for headers in ({API_KEY_HEADER: KEY}, {"Authorization": f"Bearer {KEY}"}):
            r = _request(c, method, path, headers=headers)
            assert r.status_code != 401, (method, path, r.text[:200])
            if path.startswith(("/v1/search", "/v1/items", "/v1/info", "/docs", "/openapi", "/metrics")):
                assert r.status_code < 400, (method, path, r.status_code, r.text[:200])
    assert compared, "the key must be compared in constant time (hmac.compare_digest)"


def test_no_api_key_configured_means_open(make_client):
    c = make_client()
    assert c.get("/v1/info").status_code == 200


def test_api_key_from_environment_and_in_openapi(make_client, monkeypatch):
    monkeypatch.setenv("MMSEARCH_API_KEY", KEY)
    assert Settings().api_key == KEY
    c = make_client(api_key=Settings().api_key)
    schema = c.get("/openapi.json", headers={API_KEY_HEADER: KEY}).json()
    assert schema["components"]["securitySchemes"]["APIKeyHeader"] == {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}
    assert schema["paths"]["/healthz"]["get"]["security"] == [] and schema["paths"]["/readyz"]["get"]["security"] == []


# --- CORS ---

def _preflight(c: TestClient, origin: str):
    return c.options("/v1/search", headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                            "Access-Control-Request-Headers": "content-type"})


def test_cors_is_off_by_default(make_client):
    c = make_client()
    assert "access-control-allow-origin" not in _preflight(c, "https://evil.example").headers
    assert "access-control-allow-origin" not in c.get("/v1/info", headers={"Origin": "https://evil.example"}).headers


def test_cors_allows_only_configured_origins(make_client, monkeypatch):
    monkeypatch.setenv("MMSEARCH_CORS_ORIGINS", "https://app.example, https://other.example")
    c = make_client(cors_origins=Settings().cors_origins, api_key=KEY)
    ok = _preflight(c, "https://app.example")
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in _preflight(c, "https://evil.example").headers
    r = c.get("/v1/info", headers={"Origin": "https://other.example", API_KEY_HEADER: KEY})
    assert r.headers["access-control-allow-origin"] == "https://other.example"


# --- body size, time budget, bounds ---

def test_oversized_bodies_get_413(make_client):
    c = make_client(max_upload_bytes=100_000)
    big = b"\x89PNG" + b"0" * 400_000
    r = c.post("/v1/search/image", files={"file": ("q.png", big, "image/png")})
    assert r.status_code == 413 and "larger than" in r.json()["error"]

    def chunks():  # no Content-Length: the limit must hold on the streamed bytes too
        for _ in range(40):
            yield b"x" * 10_000

    r = c.post("/v1/search", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "larger than" in r.json()["error"]
    assert c.post("/v1/search", json={"text": "small"}).status_code == 200  # normal requests unaffected


class SlowSearcher:
    """Answers text queries only once released (or after a long pause)."""

    def __init__(self, real: Searcher, pause: float) -> None:
        self._real, self._pause = real, pause
        self.release, self.finished = threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self._real, name)

    def search_text(self, *args, **kwargs):
        try:
            self.release.wait(self._pause)
            return self._real.search_text(*args, **kwargs)
        finally:
            self.finished.set()


def test_slow_requests_get_503_within_the_budget(make_client, indexed, tiny_encoder):
    slow = SlowSearcher(Searcher(indexed[2], tiny_encoder), pause=10.0)
    c = make_client(searcher_override=slow, request_timeout=0.5)
    try:
        started = time.monotonic()
        r = c.post("/v1/search", json={"text": "trains"})
        elapsed = time.monotonic() - started
        assert r.status_code == 503 and "longer than 0.5s" in r.json()["error"]
        assert elapsed < 5, f"the client waited {elapsed:.1f}s"
        assert c.get("/healthz").status_code == 200
    finally:  # let the abandoned handler finish before the test's resources go away
        slow.release.set()
        assert slow.finished.wait(30)


def test_configured_bounds_on_k_and_query_length(make_client):
    c = make_client(max_k=5, max_query_chars=50)
    assert c.post("/v1/search", json={"text": "trains", "k": 5}).status_code == 200
    r = c.post("/v1/search", json={"text": "trains", "k": 6})
    assert r.status_code == 422 and "at most 5" in r.json()["error"]
    r = c.post("/v1/search", json={"text": "t" * 51, "k": 5})
    assert r.status_code == 422 and "at most 50 characters" in r.json()["error"]
    r = c.post("/v1/search/image", files={"file": ("q.png", png_bytes(), "image/png")}, data={"k": "6"})
    assert r.status_code == 422


# --- content sniffing ---

def test_upload_type_is_decided_by_content(make_client):
    c = make_client()
    # a real PNG under a misleading name and type is still an image
    r = c.post("/v1/search/image", files={"file": ("notes.txt", png_bytes(), "text/plain")})
    assert r.status_code == 200
    # markup named and typed as a PNG is not
    r = c.post("/v1/search/image", files={"file": ("a.png", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/png")})
    assert r.status_code == 422
    # a format outside the allow-list (EPS would run Ghostscript) is refused whatever it is called
    eps = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(eps, format="EPS")
    r = c.post("/v1/search/image", files={"file": ("photo.jpg", eps.getvalue(), "image/jpeg")})
    assert r.status_code == 422 and "not a readable image" in r.json()["error"]


# --- no path escapes ---

def test_no_request_reads_a_file_outside_the_index(make_client, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET_TOKEN, encoding="utf-8")
    c = make_client()
    sent = 0
    for template, methods in c.app.openapi()["paths"].items():
        for method, operation in methods.items():
            declared = [p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"]
            for attack in TRAVERSALS + [str(secret), "../" * 8 + str(secret).lstrip("/")]:
                path = re.sub(r"\{[^}]+\}", lambda _: attack, template)
                guessed = ("path", "file", "filename", "id", "item_id", "url", "image", "target", "k")
                query = {name: attack for name in (*declared, *guessed)}
                kwargs = {"params": query}
                if method == "post" and template == "/v1/search":
                    kwargs["json"] = {"text": attack, "target": "image"}
                if method == "post" and template == "/v1/search/image":
                    kwargs["files"] = {"file": (attack, png_bytes(), "image/png")}
                    kwargs["data"] = {"target": "image"}
                r = c.request(method.upper(), path, **kwargs)
                sent += 1
                assert r.status_code < 500, (method, path, r.status_code)
                assert SECRET_TOKEN not in r.text and "root:x:0:0" not in r.text, (method, path)
    assert sent >= 5 * len(TRAVERSALS)


# --- error bodies ---

class BrokenSearcher:
    def __init__(self, exc: Exception) -> None:
        self._exc = exc

    def info(self):
        raise self._exc

    def item(self, item_id):
        raise self._exc


def test_unexpected_errors_are_a_generic_500(make_client):
    c = make_client(searcher_override=BrokenSearcher(RuntimeError("boom in /srv/app/secret_module.py line 3")),
                    raise_server_exceptions=False)
    r = c.get("/v1/info")
    assert r.status_code == 500 and r.json() == {"error": "internal error"}
    assert "Traceback" not in r.text and "/srv" not in r.text


def test_server_side_errors_do_not_leak_paths(make_client):
    exc = IndexCorruptError("index file /var/lib/mmsearch/idx/image.g3.faiss is corrupt or truncated")
    c = make_client(searcher_override=BrokenSearcher(exc))
    r = c.get("/v1/items/1")
    assert r.status_code == 503
    assert "/var/lib" not in r.text and "corrupt" in r.json()["error"]


def test_every_error_body_is_json_without_internals(make_client):
    c = make_client(max_upload_bytes=10_000)
    responses = [
        c.get("/nope"), c.get("/v1/items/abc"), c.get("/v1/items/99999999"), c.get("/v1/items/99999999/thumbnail"),
        c.post("/v1/search", content=b"{", headers={"content-type": "application/json"}),
        c.post("/v1/search/image", files={"file": ("a.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "image/png")}),
        c.post("/v1/search/image", files={"file": ("a.png", b"0" * 200_000, "image/png")}),
        c.delete("/v1/info"),
    ]
    for r in responses:
        assert 400 <= r.status_code < 500, (r.request.url, r.status_code)
        assert set(r.json()) == {"error"}, r.text
        assert "Traceback" not in r.text and "/tmp" not in r.text and "site-packages" not in r.text


def test_redact_paths():
    assert redact_paths("cannot read /home/u/idx/a.faiss: bad") == "cannot read <path>: bad"
    assert redact_paths("file 'C:\\data\\x.faiss' broke") == "file '<path>' broke"
    assert redact_paths("k must be at most 1000") == "k must be at most 1000"
    assert redact_paths("image is 10x10 = 100 pixels, and/or so") == "image is 10x10 = 100 pixels, and/or so"
