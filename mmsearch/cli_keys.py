"""`mmsearch keys create/list/revoke`: the API keys a server checks (mmsearch.storage.apikeys)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click

from mmsearch.config import Settings
from mmsearch.storage.apikeys import KeyStore, Scope

_index_dir = click.option("--index-dir", type=click.Path(path_type=Path), default=None,
                          help="The server's index directory; keys live in its keys.sqlite, or in $MMSEARCH_DATABASE_URL when set.")


def _store(index_dir: Path | None) -> KeyStore:
    settings = Settings(**({"index_dir": index_dir} if index_dir is not None else {}))
    return KeyStore.beside(settings.index_dir, settings.database())


def _when(stamp: float | None) -> str:
    return dt.datetime.fromtimestamp(stamp, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if stamp else "-"


@click.group()
def keys() -> None:
    """Manage API keys with read, write or admin scope, per collection or global."""


@keys.command("create")
@click.option("--scope", type=click.Choice([s.value for s in Scope]), required=True,
              help="read: search and fetch; write: also add/change/delete items; admin: also create/drop collections.")
@click.option("--collection", default=None, help="Limit the key to this collection [default: every collection].")
@click.option("--name", default="", help="A label to recognise the key by (who or what uses it).")
@_index_dir
def create(scope: str, collection: str | None, name: str, index_dir: Path | None) -> None:
    """Create a key and print its secret: it is shown this once, only its hash is stored."""
    store = _store(index_dir)
    try:
        key, secret = store.create(Scope(scope), collection, name)
    finally:
        store.close()
    click.echo(secret)
    click.echo(f"created {key.describe()}; the secret above is not stored, keep it now (servers accept it within a few seconds)",
               err=True)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_index_dir
def list_keys(as_json: bool, index_dir: Path | None) -> None:
    """List keys (ids, scopes, collections; never secrets), revoked ones included."""
    store = _store(index_dir)
    try:
        found = store.load()
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps([k.public() for k in found], indent=2))
        return
    if not found:
        click.echo("no API keys (the server is open unless MMSEARCH_API_KEY is set)")
        return
    click.echo(f"{'id':<12}  {'scope':<5}  {'collection':<16}  {'created':<20}  {'revoked':<20}  name")
    for k in found:
        click.echo(f"{k.id:<12}  {k.scope.value:<5}  {k.collection or '*':<16}  {_when(k.created_at):<20}  {_when(k.revoked_at):<20}  {k.name}")


@keys.command("revoke")
@click.argument("key_id")
@_index_dir
def revoke(key_id: str, index_dir: Path | None) -> None:
    """Revoke a key by its id (running servers refuse it within a few seconds)."""
    store = _store(index_dir)
    try:
        key = store.revoke(key_id)
    finally:
        store.close()
    click.echo(f"revoked {key.describe()}")


__all__ = ["keys"]
