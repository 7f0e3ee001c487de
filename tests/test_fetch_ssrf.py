"""Image URLs of the write API: private, loopback, link-local and other non-public addresses are refused
before any connection (also when a redirect or one of several DNS answers points there), unless an
operator-allowed network holds them; size, time, redirect and content-type limits hold.

Only a local HTTP server on 127.0.0.1 is ever contacted: every other address in these tests is refused
by the check that runs before connecting (which is the point)."""

from __future__ import annotations

import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient

from conftest import pattern_image
from mmsearch.api import create_app
from mmsearch.api.fetch import FetchPolicy, address_refused, fetch_image_bytes, parse_networks
from mmsearch.config import Settings
from mmsearch.errors import ImageFetchError
from mmsearch.search import Searcher


def _png() -> bytes:
    buf = io.BytesIO()
    pattern_image(5).save(buf, format="PNG")
    return buf.getvalue()


class ImageHost:
    """A tiny HTTP server on 127.0.0.1 that logs every request it gets."""

    def __init__(self) -> None:
        host = self
        self.requests: list[tuple[str, str]] = []  # (path, Host header)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                host.requests.append((self.path, self.headers.get("Host", "")))
                path, _, query = self.path.partition("?")
                if path == "/img.png":
                    self._send(200, _png(), "image/png")
                elif path == "/page":
                    self._send(200, b"<html>hi</html>", "text/html")
                elif path == "/big":
                    self._send(200, b"\x89PNG" + b"0" * 5000, "image/png")
                elif path == "/slow":
                    time.sleep(1.5)
                    self._send(200, _png(), "image/png")
                elif path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", query.removeprefix("to="))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif path == "/loop":
                    self.send_response(301)
                    self.send_header("Location", "/loop")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self._send(404, b"no", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "ImageHost":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def image_host():
    with ImageHost() as host:
        yield host


LOCAL = FetchPolicy(parse_networks("127.0.0.1/32"), timeout=1.0, max_redirects=2, max_bytes=2000)
STRICT = FetchPolicy(timeout=1.0, max_redirects=2, max_bytes=100_000)

REFUSED_HOSTS = [
    "127.0.0.1", "127.1.2.3", "localhost", "2130706433", "0.0.0.0",  # loopback and its spellings, unspecified
    "169.254.169.254", "169.254.1.1",  # link-local (cloud metadata)
    "10.0.0.1", "172.16.5.4", "192.168.1.1", "100.64.0.1",  # private ranges and carrier-grade NAT
    "[::1]", "[::ffff:127.0.0.1]", "[::ffff:169.254.169.254]", "[fe80::1]", "[fc00::1]", "224.0.0.1",
]


@pytest.mark.parametrize("host", REFUSED_HOSTS)
def test_non_public_addresses_are_refused_without_connecting(host, image_host):
    port = image_host.url.rsplit(":", 1)[1]
    with pytest.raises(ImageFetchError) as refused:
        fetch_image_bytes(f"http://{host}:{port}/img.png", STRICT)
    assert "non-public" in str(refused.value) or "cannot be resolved" in str(refused.value)
    assert image_host.requests == []  # nothing reached the (loopback) server


def test_every_resolved_address_must_be_public():
    """A name with one private answer among public ones is refused: the connection could go to either."""
    resolved: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        resolved.append(host)
        return {"mixed.example": ["93.184.216.34", "10.0.0.7"], "inner.example": ["192.168.0.10"]}[host]

    for host in ("mixed.example", "inner.example"):
        with pytest.raises(ImageFetchError, match="non-public"):
            fetch_image_bytes(f"https://{host}/a.png", STRICT, resolve=resolver)
    assert resolved == ["mixed.example", "inner.example"]  # resolved once each, then refused before connecting
    assert not address_refused("93.184.216.34", ()) and address_refused("10.0.0.7", ())
    assert not address_refused("10.0.0.7", parse_networks("10.0.0.0/8"))


def test_allowed_network_fetches_with_limits(image_host):
    data, final = fetch_image_bytes(f"{image_host.url}/img.png", LOCAL)
    assert data == _png() and final.endswith("/img.png")
    assert image_host.requests[-1][1] == image_host.url.removeprefix("http://")  # the Host header names the URL's host
    cases = {
        "/page": "not an image",
        "/big": "larger than 2000 bytes",
        "/slow": "took longer than 1s",
        "/loop": "redirected more than 2 times",
        "/missing": "HTTP 404",
    }
    for path, reason in cases.items():
        with pytest.raises(ImageFetchError, match=reason):
            fetch_image_bytes(image_host.url + path, LOCAL)


def test_redirects_to_refused_addresses_are_refused(image_host):
    port = image_host.url.rsplit(":", 1)[1]
    for target in ("http://169.254.169.254/latest/meta-data/", f"http://127.0.0.2:{port}/img.png", "http://10.0.0.1/x.png",
                   "http://[::1]/x.png"):
        before = len(image_host.requests)
        with pytest.raises(ImageFetchError, match="non-public"):
            fetch_image_bytes(f"{image_host.url}/redirect?to={target}", LOCAL)
        assert [p for p, _ in image_host.requests[before:]] == [f"/redirect?to={target}"]  # the first hop only
    data, _ = fetch_image_bytes(f"{image_host.url}/redirect?to=/img.png", LOCAL)  # a relative redirect, allowed
    assert data == _png()


def test_bad_urls_are_refused():
    for url, reason in [("file:///etc/passwd", "http"), ("ftp://example.com/a.png", "http"), ("gopher://x/", "http"),
                        ("http://user:pw@example.com/a.png", "user name or password"), ("http:///a.png", "no host"),
                        ("http://[zz/a.png", "not a valid URL")]:
        with pytest.raises(ImageFetchError, match=reason):
            fetch_image_bytes(url, STRICT, resolve=lambda h, p: pytest.fail("nothing may be resolved"))


def test_write_api_fetches_only_from_allowed_networks(indexed, tiny_encoder, image_host):
    _, _, index_dir, _ = indexed
    for allow, expected in (("", 422), ("127.0.0.1/32", 200)):
        searcher = Searcher(index_dir, tiny_encoder)
        app = create_app(Settings(index_dir=index_dir, fetch_allow_networks=allow, fetch_timeout=5), searcher=searcher)
        with TestClient(app) as c:
            r = c.put("/v1/items/by-url", json={"text": "fetched", "image_url": f"{image_host.url}/img.png"})
            assert r.status_code == expected, r.text
            if expected == 422:
                assert "non-public" in r.json()["error"] and image_host.requests == []
            else:
                assert set(r.json()["ids"]) == {"text", "image"} and len(image_host.requests) == 1
                redirected = c.put("/v1/items/meta", json={"text": "x", "image_url": f"{image_host.url}/redirect?to=http://169.254.169.254/"})
                assert redirected.status_code == 422 and "non-public" in redirected.json()["error"]
        searcher.close()
