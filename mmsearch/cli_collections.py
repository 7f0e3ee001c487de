"""`mmsearch collections create/list/drop`, and the ``--collection`` option of the other commands.

A collection is an index directory under ``<index-dir>/collections/<name>`` (with PostgreSQL, a schema of
its own too; see mmsearch.storage.collections); ``mmsearch serve`` serves every collection of its
``--index-dir`` at ``/v1/collections/<name>/...`` next to the default one.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from mmsearch.config import Settings
from mmsearch.errors import CollectionExistsError
from mmsearch.storage import collections as colls

collection_option = click.option(
    "--collection", default=None, metavar="NAME",
    help="Work on this collection of the --index-dir (see `mmsearch collections`) [default: the index-dir itself].",
)


def where(settings: Settings, collection: str | None) -> colls.Place:
    """The index directory and database URL a command works on: the collection's, or the default one."""
    return colls.place(settings.index_dir, collection or colls.DEFAULT, settings.database())


def _settings(index_dir: Path | None) -> Settings:
    return Settings(**({"index_dir": index_dir} if index_dir is not None else {}))


_index_dir = click.option("--index-dir", type=click.Path(path_type=Path), default=None,
                          help="The server's index directory [default: $MMSEARCH_INDEX_DIR or ./.mmsearch]")


@click.group("collections")
def collections_group() -> None:
    """Named collections (one index each, with its own model and settings) served by one server."""


@collections_group.command("create")
@click.argument("name")
@_index_dir
@click.option("--model", default=None, help="Model spec [default: $MMSEARCH_MODEL, i.e. mmsearch-lite].")
@click.option("--index-type", default=None, help="auto, flat, hnsw, ivf, ivfpq, sq8 or a FAISS factory string [default auto].")
@click.option("--recall-target", type=click.FloatRange(0.0, 1.0, min_open=True), default=None, help="recall@10 to keep [default 0.95].")
def create(name: str, index_dir: Path | None, model: str | None, index_type: str | None, recall_target: float | None) -> None:
    """Create an empty collection NAME; fill it with `mmsearch index PATH --collection NAME` or the write API."""
    from mmsearch.encoders import load_encoder

    s = _settings(index_dir)
    colls.check_name(name)
    if colls.exists(s.index_dir, name, s.database()):
        raise CollectionExistsError(f"collection {name!r} already exists")
    spec = model or s.model
    encoder = load_encoder(spec, s.device, s.batch_size, s.effective_threads())  # its id and dimension go in the manifest
    colls.create(s.index_dir, name, s.database(), model_spec=spec, model_id=encoder.model_id, dim=encoder.dim,
                 index_type=index_type, recall_target=recall_target)
    click.echo(f"created collection {name} ({spec}, {encoder.dim}-d) in {colls.place(s.index_dir, name).path}")


@collections_group.command("list")
@_index_dir
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_command(index_dir: Path | None, as_json: bool) -> None:
    """The collections of the index directory, with their model and item counts."""
    from mmsearch.storage.indexdir import describe

    s = _settings(index_dir)
    rows = []
    for name in colls.list_names(s.index_dir, s.database()):
        place = colls.place(s.index_dir, name, s.database())
        facts = describe(place.path, place.database_url, s.faiss_device)
        rows.append({"name": name, "model": facts["model"], "dim": facts["dim"], "counts": facts["counts"], "path": facts["index_dir"]})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no collections in {s.index_dir}")
    for row in rows:
        counts = ", ".join(f"{n} {m}s" for m, n in row["counts"].items())
        click.echo(f"{row['name']:<20} {row['model']:<28} {counts}")


@collections_group.command("drop")
@click.argument("name")
@_index_dir
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def drop(name: str, index_dir: Path | None, yes: bool) -> None:
    """Delete collection NAME and everything in it (a running server stops serving it)."""
    s = _settings(index_dir)
    colls.check_name(name)
    if not yes:
        click.confirm(f"delete collection {name} and all its items?", abort=True)
    colls.drop(s.index_dir, name, s.database())
    click.echo(f"dropped collection {name}")
