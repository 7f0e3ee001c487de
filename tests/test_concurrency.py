"""Concurrency: a real server (uvicorn on 127.0.0.1, a free port) under a bounded load of concurrent
clients keeps answering with zero errors, also while index updates run and are swapped in."""

from __future__ import annotations

import io
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import pattern_image, run_index
from live_server import LiveServer
from mmsearch.api import create_app
from mmsearch.config import Settings
from mmsearch.encoders import TEST_MODEL, load_encoder
from mmsearch.search import Searcher

CLIENTS = 16
REQUESTS_PER_CLIENT = 50
UPDATES = 3


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    pattern_image(seed).save(buf, format="PNG")
    return buf.getvalue()


def _client_session(url: str, seed: int, item_ids: list[int], image_ids: list[int]) -> Counter:
    """One client's bounded sequence of mixed requests. -> status counts (and 'exception' for transport errors)."""
    rng = random.Random(seed)
    outcome = Counter()
    with httpx.Client(base_url=url, timeout=60) as http:
        for n in range(REQUESTS_PER_CLIENT):
            kind = rng.choice(["text", "text", "image", "item", "thumb", "info"])
            try:
                if kind == "text":
                    r = http.post("/v1/search", json={"text": rng.choice(["the sea", "bread", "a night train"]),
                                                      "target": rng.choice(["image", "text", "all"]), "k": rng.randint(1, 20)})
                elif kind == "image":
                    r = http.post("/v1/search/image", files={"file": ("q.png", _png(seed * 100 + n), "image/png")},
                                  data={"target": "all", "k": "5"})
                elif kind == "item":
                    r = http.get(f"/v1/items/{rng.choice(item_ids)}")
                elif kind == "thumb":
                    r = http.get(f"/v1/items/{rng.choice(image_ids)}/thumbnail")
                else:
                    r = http.get("/v1/info")
                outcome[r.status_code] += 1
                if r.status_code == 200 and kind in ("text", "image"):
                    assert all(h["path"] or h["text"] for h in r.json()["hits"])
            except (httpx.HTTPError, AssertionError) as exc:
                outcome[f"exception {type(exc).__name__}"] += 1
    return outcome


@pytest.mark.slow
def test_load_with_concurrent_index_updates(indexed, tiny_encoder, tmp_path, record_property):
    root, _, index_dir, _ = indexed
    searcher = Searcher(index_dir, tiny_encoder, reload_interval=0.2)
    records = searcher.store.all_items()
    item_ids = [r.id for r in records]
    image_ids = [r.id for r in records if r.modality == "image"]
    app = create_app(Settings(index_dir=index_dir, reload_interval=0.2, request_timeout=60), searcher=searcher)
    indexer_encoder = load_encoder(TEST_MODEL, device="cpu", batch_size=8)  # its own model object, as a separate run has
    generations: list[int] = []
    windows: list[tuple[float, float]] = []

    def updates() -> None:
        for u in range(UPDATES):
            for i in range(10):
                pattern_image(5000 + u * 100 + i).save(root / f"new_{u}_{i}.png")
            update_started = time.monotonic()
            run_index(root, index_dir, indexer_encoder)
            windows.append((update_started, time.monotonic()))
            generations.append(searcher.store.generation())

    started = time.monotonic()
    with LiveServer(app) as server:
        first_info = httpx.get(server.url + "/v1/info", timeout=30).json()
        updater = threading.Thread(target=updates, daemon=True)
        updater.start()
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(lambda s: _client_session(server.url, s, item_ids, image_ids), range(CLIENTS)))
        load_ended = time.monotonic()
        updater.join(120)
        assert not updater.is_alive(), "index updates did not finish"
        time.sleep(0.5)
        last_info = httpx.get(server.url + "/v1/info", timeout=30).json()
    elapsed = time.monotonic() - started
    searcher.close()

    total = sum(results, Counter())
    sent = sum(total.values())
    errors = sent - total[200]
    record_property("load_requests", sent)
    record_property("load_errors", errors)
    print(f"\nload test: {sent} requests from {CLIENTS} clients in {elapsed:.1f}s ({sent / elapsed:.0f}/s), "
          f"{errors} errors, {UPDATES} index updates during it; statuses {dict(total)}")
    assert sent == CLIENTS * REQUESTS_PER_CLIENT
    assert errors == 0, dict(total)
    assert len(generations) == UPDATES
    overlapped = sum(1 for start, _ in windows if start < load_ended)
    assert overlapped >= 2, "the index updates must run while the load is on"
    assert last_info["counts"]["image"] == first_info["counts"]["image"] + 10 * UPDATES  # updates were served


def test_queries_keep_working_while_an_update_runs(indexed, tiny_encoder, monkeypatch):
    """In-process: a reader thread queries in a loop while index updates commit and publish. Every
    committed batch waits for the reader to answer a query, so reads really interleave with the update."""
    from mmsearch.writer import IndexWriter

    root, _, index_dir, _ = indexed
    answered = threading.Condition()
    real_add = IndexWriter.add

    def add_then_let_reader_in(self, items, vectors):
        ids = real_add(self, items, vectors)
        with answered:
            seen = outcome["ok"]
            answered.wait_for(lambda: outcome["ok"] > seen or stop.is_set(), timeout=10)
        return ids

    monkeypatch.setattr(IndexWriter, "add", add_then_let_reader_in)
    searcher = Searcher(index_dir, tiny_encoder, reload_interval=0)
    indexer_encoder = load_encoder(TEST_MODEL, device="cpu", batch_size=8)
    stop = threading.Event()
    outcome = Counter()

    def reader() -> None:
        while not stop.is_set():
            try:
                hits = searcher.search_text("a night train", "all", k=50)
                with answered:
                    outcome["ok"] += 1
                    outcome["max_hits"] = max(outcome["max_hits"], len(hits))
                    answered.notify_all()
            except Exception as exc:  # counted: the assertion below is that there are none
                outcome[f"error {type(exc).__name__}: {exc}"] += 1
            stop.wait(0.002)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        for u in range(3):
            for i in range(8):
                pattern_image(7000 + u * 10 + i).save(root / f"extra_{u}_{i}.png")
            (root / f"img{u}.png").unlink(missing_ok=True)
            run_index(root, index_dir, indexer_encoder, batch_size=2)
    finally:
        stop.set()
        thread.join(30)
        searcher.close()
    errors = {k: v for k, v in outcome.items() if k.startswith("error")}
    assert not errors, errors
    assert outcome["ok"] > 3 * 4 and outcome["max_hits"] > 9  # a read per committed batch, and it saw the added items
