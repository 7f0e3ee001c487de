"""A Python client for the mmsearch HTTP API (httpx): search, query, writes by key, bulk writes, collections.

    from mmsearch.client import Client

    with Client("http://127.0.0.1:8000", api_key="...") as api:
        api.upsert("sku-1", text="red running shoes", metadata={"price": 79.5}, image=Path("shoe.jpg"))
        hits = api.search("red shoes", k=5)
        shop = api.collection("shop_de")            # the same API, scoped to one collection
        shop.bulk([{"key": "sku-2", "text": "blue bag"}, {"key": "sku-3", "delete": True}])

Every error the server reports becomes :class:`ApiError` with the HTTP status and the server's one-line
message. ``Client(http=...)`` accepts any ``httpx.Client`` (e.g. Starlette's TestClient in tests).
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import httpx

from mmsearch.errors import MmsearchError

API_KEY_HEADER = "X-API-Key"
ImageInput = bytes | str | os.PathLike


class ApiError(MmsearchError):
    """The server answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


@dataclass
class BulkResult:
    """Per-row outcomes of a bulk write, in input order, and the count per status."""

    rows: list[dict] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    complete: bool = False  # the server's closing summary line arrived

    @property
    def errors(self) -> list[dict]:
        return [r for r in self.rows if r.get("status") == "error"]


def _image_bytes(image: ImageInput) -> bytes:
    return image if isinstance(image, bytes) else Path(image).read_bytes()


def _quote(segment: str) -> str:
    from urllib.parse import quote

    return quote(segment, safe="")


class Client:
    """One server (and optionally one collection of it). Thread-safe as httpx.Client is."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, api_key: str | None = None, collection: str | None = None,
                 timeout: float = 60.0, http: httpx.Client | None = None) -> None:
        headers = {API_KEY_HEADER: api_key} if api_key else {}
        self._own = http is None
        self.http = http if http is not None else httpx.Client(base_url=base_url, timeout=timeout, headers=headers)
        if http is not None and api_key:
            self.http.headers[API_KEY_HEADER] = api_key
        self.collection_name = collection

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._own:
            self.http.close()

    def collection(self, name: str) -> "Client":
        """The same server, scoped to collection ``name`` (sharing this client's connection pool)."""
        return Client(http=self.http, collection=name)

    # --- plumbing ---
    def _path(self, route: str) -> str:
        return f"/v1/collections/{_quote(self.collection_name)}{route}" if self.collection_name else f"/v1{route}"

    def _call(self, method: str, path: str, **kwargs) -> Any:
        response = self.http.request(method, path, **kwargs)
        return self._json(response)

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise ApiError(response.status_code, str(message))
        return response.json()

    # --- reads ---
    def info(self) -> dict:
        return self._call("GET", self._path("/info"))

    def search(self, text: str, target: str = "image", k: int = 10) -> list[dict]:
        """Hits (id, score, modality, path, text, metadata) for a text query, best first."""
        return self._call("POST", self._path("/search"), json={"text": text, "target": target, "k": k})["hits"]

    def search_image(self, image: ImageInput, target: str = "image", k: int = 10) -> list[dict]:
        files = {"file": ("query", _image_bytes(image), "application/octet-stream")}
        return self._call("POST", self._path("/search/image"), files=files, data={"target": target, "k": str(k)})["hits"]

    def query(self, text: str | None = None, **body: Any) -> dict:
        """The composite query (``terms``, ``filter``, ``mode``, ``group``, ``offset``/``limit``, ...; see docs/search.md)."""
        if text is not None:
            body["text"] = text
        return self._call("POST", self._path("/query"), json=body)

    def item(self, item_id: int) -> dict:
        return self._call("GET", self._path(f"/items/{int(item_id)}"))

    def get(self, key: str) -> dict:
        """What is stored under ``key``: ``{"key", "items": [text item, image item]}``."""
        return self._call("GET", self._path(f"/keys/{_quote(key)}"))

    # --- writes ---
    def upsert(self, key: str, text: str | None = None, metadata: dict | None = None, *, image: ImageInput | None = None,
               image_url: str | None = None) -> dict:
        """Create or replace the item ``key`` -> ``{"key", "status", "ids", "generation"}``. Returns once the
        write is committed and searchable; unchanged content is not embedded again."""
        path = self._path(f"/items/{_quote(key)}")
        if image is not None:
            data = {"metadata": json.dumps(metadata or {})}
            if text is not None:
                data["text"] = text
            return self._call("PUT", path, files={"file": ("image", _image_bytes(image), "application/octet-stream")}, data=data)
        body: dict[str, Any] = {"text": text, "metadata": metadata or {}}
        if image_url is not None:
            body["image_url"] = image_url
        return self._call("PUT", path, json=body)

    def delete(self, key: str) -> dict:
        return self._call("DELETE", self._path(f"/items/{_quote(key)}"))

    def bulk(self, rows: Iterable[dict]) -> BulkResult:
        """Upsert/delete many items in one request. Each row: ``key`` plus ``text``, ``metadata``, ``image``
        (bytes or a path; sent base64), ``image_url`` or ``image_b64``; or ``{"key": ..., "delete": True}``."""
        result = BulkResult()
        with self.http.stream("POST", self._path("/items:bulk"), content=_ndjson(rows),
                              headers={"content-type": "application/x-ndjson"}) as response:
            if response.status_code >= 400:
                response.read()
                self._json(response)
            for line in response.iter_lines():
                if not line.strip():
                    continue
                row = json.loads(line)
                if row.get("done"):
                    result.counts, result.complete = row.get("counts", {}), True
                else:
                    result.rows.append(row)
        return result

    # --- collections ---
    def collections(self) -> list[dict]:
        return self._call("GET", "/v1/collections")["collections"]

    def create_collection(self, name: str, model: str | None = None, index_type: str | None = None,
                          recall_target: float | None = None) -> dict:
        body = {k: v for k, v in {"model": model, "index_type": index_type, "recall_target": recall_target}.items() if v is not None}
        return self._call("PUT", f"/v1/collections/{_quote(name)}", json=body)

    def drop_collection(self, name: str) -> dict:
        return self._call("DELETE", f"/v1/collections/{_quote(name)}")


def _ndjson(rows: Iterable[dict]) -> Iterator[bytes]:
    for row in rows:
        row = dict(row)
        image = row.pop("image", None)
        if image is not None:
            row["image_b64"] = base64.b64encode(_image_bytes(image)).decode("ascii")
        yield (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")


__all__ = ["ApiError", "BulkResult", "Client"]
