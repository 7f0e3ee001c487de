"""API keys with scopes: stored hashed, checked in constant time, managed with `mmsearch keys`."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mmsearch.cli import main
from mmsearch.errors import ConfigError, KeyNotFoundError
from mmsearch.storage.apikeys import ENV_KEY_ID, KEYS_FILE, KeyRing, KeyStore, Scope, key_id_of


def test_scopes_are_ordered():
    assert Scope.ADMIN.covers(Scope.WRITE) and Scope.ADMIN.covers(Scope.READ) and Scope.WRITE.covers(Scope.READ)
    assert not Scope.READ.covers(Scope.WRITE) and not Scope.WRITE.covers(Scope.ADMIN)


def test_secret_is_shown_once_and_stored_only_as_a_hash(tmp_path):
    store = KeyStore.beside(tmp_path)
    key, secret = store.create(Scope.WRITE, "shop-fr", "back end")
    assert secret.startswith("mms_") and key_id_of(secret.encode()) == key.id and len(secret) > 50
    raw = (tmp_path / KEYS_FILE).read_bytes()
    assert secret.encode() not in raw and secret.split("_", 2)[2].encode() not in raw
    [listed] = store.load()
    assert listed.public() == {"id": key.id, "name": "back end", "scope": "write", "collection": "shop-fr",
                               "created_at": key.created_at, "revoked_at": None}
    assert secret not in repr(listed)


def test_keyring_authenticates_only_the_exact_active_key(tmp_path):
    store = KeyStore.beside(tmp_path)
    ring = KeyRing(store)
    assert not ring.enabled  # no keys: the server stays open as before
    key, secret = store.create(Scope.READ)
    other, other_secret = store.create(Scope.ADMIN, "b")
    ring.refresh()
    assert ring.enabled
    assert ring.authenticate(secret.encode()).id == key.id
    assert ring.authenticate(other_secret.encode()).id == other.id
    # right id, wrong secret; truncated; extended; garbage; another key's id with this secret
    for bad in (secret[:-1] + ("A" if secret[-1] != "A" else "B"), secret[:-1], secret + "x", "mms_", "x" * 80,
                f"mms_{other.id}_{secret.split('_', 2)[2]}"):
        assert ring.authenticate(bad.encode()) is None, bad
    store.revoke(key.id)
    assert ring.authenticate(secret.encode()) is not None  # until the ring re-reads the store
    ring.refresh()
    assert ring.authenticate(secret.encode()) is None
    store.revoke(other.id)
    ring.refresh()
    assert ring.enabled, "revoking every key must not open the server"


def test_compare_is_constant_time(tmp_path, monkeypatch):
    import mmsearch.storage.apikeys as apikeys

    calls = []
    real = apikeys.hmac.compare_digest
    monkeypatch.setattr(apikeys.hmac, "compare_digest", lambda a, b: calls.append((len(a), len(b))) or real(a, b))
    store = KeyStore.beside(tmp_path)
    _, secret = store.create(Scope.READ)
    ring = KeyRing(store)
    assert ring.authenticate(secret.encode()) is not None
    assert ring.authenticate(b"mms_000000000000_unknown-id") is None  # an unknown id is compared too
    assert calls == [(32, 32), (32, 32)], "hashes, compared with hmac.compare_digest, for known and unknown ids"


def test_env_key_is_a_global_admin_key(tmp_path):
    ring = KeyRing(KeyStore.beside(tmp_path), env_secret="legacy-secret")
    key = ring.authenticate(b"legacy-secret")
    assert key.id == ENV_KEY_ID and key.scope is Scope.ADMIN and key.collection is None
    assert key.allows(Scope.ADMIN, "anything") and key.allows(Scope.READ, None)
    assert ring.authenticate(b"legacy-secre") is None


def test_collection_keys_stay_in_their_collection(tmp_path):
    store = KeyStore.beside(tmp_path)
    key, _ = store.create(Scope.WRITE, "shop-fr")
    assert key.allows(Scope.WRITE, "shop-fr") and key.allows(Scope.READ, "shop-fr")
    assert not key.allows(Scope.READ, "shop-de") and not key.allows(Scope.READ, None)
    assert not key.allows(Scope.ADMIN, "shop-fr")
    with pytest.raises(ConfigError):
        store.create(Scope.READ, "../etc")
    with pytest.raises(KeyNotFoundError):
        store.revoke("nope")


def test_reading_keys_creates_no_file(tmp_path):
    assert KeyStore.beside(tmp_path).load() == []
    assert not (tmp_path / KEYS_FILE).exists()


def _cli(*args):
    return CliRunner().invoke(main, ["keys", *map(str, args)], catch_exceptions=False)


def test_keys_cli_create_list_revoke(tmp_path):
    created = _cli("create", "--scope", "read", "--collection", "shop-fr", "--name", "storefront", "--index-dir", tmp_path)
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip()
    assert secret.startswith("mms_") and "not stored" in created.stderr
    listed = _cli("list", "--index-dir", tmp_path)
    key_id = key_id_of(secret.encode())
    assert key_id in listed.stdout and "shop-fr" in listed.stdout and "storefront" in listed.stdout
    assert secret not in listed.stdout and secret.split("_", 2)[2] not in listed.stdout
    revoked = _cli("revoke", key_id, "--index-dir", tmp_path)
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout
    [row] = json.loads(_cli("list", "--json", "--index-dir", tmp_path).stdout)
    assert row["id"] == key_id and row["revoked_at"] is not None and "digest" not in row
    missing = _cli("revoke", "000000000000", "--index-dir", tmp_path)
    assert missing.exit_code == 1 and "no API key with id" in missing.stderr
    bad = _cli("create", "--scope", "owner", "--index-dir", tmp_path)
    assert bad.exit_code == 2
