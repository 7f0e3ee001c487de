"""Property-based fuzzing of every operation in the OpenAPI schema (schemathesis): whatever a client
sends, the server never answers with a 5xx, and every error is a JSON body.

A bounded number of examples per operation keeps this to well under two minutes on two cores.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from conftest import make_corpus, run_index
from mmsearch.encoders import TEST_MODEL
from mmsearch.api import create_app
from mmsearch.api.security import API_KEY_HEADER
from mmsearch.config import Settings
from mmsearch.search import Searcher
from mmsearch.storage.apikeys import KeyStore, Scope

EXAMPLES_PER_OPERATION = 100
FUZZ_STATS = {"cases": 0, "5xx": 0}
KEYS: dict[str, str] = {}


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory, tiny_encoder):
    root = tmp_path_factory.mktemp("fuzz_corpus")
    make_corpus(root)
    index_dir = tmp_path_factory.mktemp("fuzz_index")
    run_index(root, index_dir, tiny_encoder)
    searcher = Searcher(index_dir, tiny_encoder)
    # Keys guard the routes: the fuzzer calls them with a global admin key made by `mmsearch keys`
    # (so every route is reached), next to a key of the single-key setting. Small budgets, so it
    # also reaches the size and bound checks. (collections created by the fuzzer use the tiny model too;
    # image URLs it invents are refused or fail fast)
    KEYS["admin"] = KeyStore.beside(index_dir).create(Scope.ADMIN, name="fuzz")[1]
    app = create_app(Settings(index_dir=index_dir, max_upload_bytes=200_000, max_k=200, request_timeout=20, api_key="legacy-key",
                              model=TEST_MODEL, fetch_timeout=2), searcher=searcher)
    yield app
    searcher.close()
    print(f"\nschemathesis: {FUZZ_STATS['cases']} requests, {FUZZ_STATS['5xx']} server errors")


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx, value) -> bytes:
    """Bulk write bodies: whatever the fuzzer made of the declared string, as lines of text."""
    return value.encode("utf-8") if isinstance(value, str) else (json.dumps(value) + "\n").encode("utf-8")


# Every /v1 route is also served per collection (/v1/collections/{name}/...) by the same handler: fuzzing the
# copies too would double the run for nothing new. Collection management itself is fuzzed.
MIRRORED = "/v1/collections/{name}/"


def _operations(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers={API_KEY_HEADER: KEYS["admin"]})
    return [op for op in (result.ok() for result in schema.get_all_operations()) if not op.path.startswith(MIRRORED)]


def _check(case) -> None:
    response = case.call(headers={API_KEY_HEADER: KEYS["admin"]})
    FUZZ_STATS["cases"] += 1
    FUZZ_STATS["5xx"] += response.status_code >= 500
    assert response.status_code < 500, f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str), response.text[:300]
        assert "Traceback" not in response.text


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_no_request_makes_the_server_fail(fuzz_app, mode):
    """Schema-valid requests (positive) and schema-violating ones (negative), for every operation."""
    operations = _operations(fuzz_app)
    assert len(operations) >= 6
    tried = []
    for operation in operations:
        @given(case=operation.as_strategy(mode))
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case) -> None:
            _check(case)

        try:
            fuzz()
        except Unsatisfiable:
            # an operation without parameters or body has no way to be called wrongly
            if mode is GenerationMode.POSITIVE or _takes_input(operation):
                raise
        tried.append(operation.label)
    assert len(tried) >= 4, tried


def _takes_input(operation) -> bool:
    definition = operation.definition.raw if hasattr(operation.definition, "raw") else operation.definition
    return bool(definition.get("parameters") or definition.get("requestBody"))
