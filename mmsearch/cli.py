"""`mmsearch` command line. Library errors become one line on stderr and a non-zero exit."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from mmsearch.config import Settings
from mmsearch.errors import InvalidQueryError, MmsearchError

log = logging.getLogger("mmsearch")


class _Cli(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MmsearchError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # a bug or an OS failure: still one line, details with -v
            if logging.getLogger().isEnabledFor(logging.INFO):
                raise
            first = (str(exc).splitlines() or [""])[0]
            click.echo(f"error: {type(exc).__name__}: {first} (run with -v for details)", err=True)
            ctx.exit(1)


def _settings(**overrides) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


index_dir_option = click.option(
    "--index-dir", type=click.Path(path_type=Path), default=None, help="Index directory [default: $MMSEARCH_INDEX_DIR or ./.mmsearch]"
)
device_option = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="Where the model runs.")


@click.group(cls=_Cli)
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.version_option(package_name="mmsearch")
def main(verbose: int) -> None:
    """Cross-modal search: index a folder of images and texts, then search it by text or by image."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@index_dir_option
@click.option("--model", default=None, help="Model spec [default: mmsearch-lite, or the index's own model].")
@click.option("--batch-size", type=int, default=None, help="Items per encoder batch.")
@click.option("--workers", type=int, default=None, help="Image decode worker processes.")
@device_option
@click.option(
    "--index-type", default=None,
    help="Vector index: auto (exact below $MMSEARCH_ANN_THRESHOLD vectors, else IVF), flat, hnsw, ivf, ivfpq, sq8, "
         "or a FAISS index_factory string. Kept for later runs [default: the index's own, else auto].",
)
@click.option("--recall-target", type=click.FloatRange(0.0, 1.0, min_open=True), default=None,
              help="recall@10 against exact search that approximate search is tuned to keep [default 0.95].")
def index(path: Path, index_dir: Path | None, model: str | None, batch_size: int | None, workers: int | None, device: str | None,
          index_type: str | None, recall_target: float | None) -> None:
    """Index (or update the index of) a folder, or a JSONL/CSV manifest."""
    from indexer.pipeline import index_source
    from mmsearch.encoders import load_encoder
    from mmsearch.threads import configure_batch

    s = _settings(index_dir=index_dir, batch_size=batch_size, workers=workers, device=device)
    configure_batch(s.threads)
    report = index_source(
        path, s.index_dir,
        lambda spec: load_encoder(spec, s.device, s.batch_size, s.effective_threads(), s.precision),
        model_spec=model, default_model=s.model, batch_size=s.batch_size, workers=s.workers, max_pixels=s.max_image_pixels,
        index_type=index_type, recall_target=recall_target, flat_threshold=s.ann_threshold,
    )
    click.echo(
        f"indexed {report.source} -> {report.index_dir} in {report.seconds:.1f}s: "
        f"{report.added} added, {report.reembedded} re-embedded, {report.moved} moved, {report.updated} updated, "
        f"{report.removed} removed, {report.unchanged} unchanged, {len(report.failures)} failed; "
        f"index holds {report.counts.get('image', 0)} images, {report.counts.get('text', 0)} texts"
    )
    for key, reason in report.failures:
        click.echo(f"  skipped {key}: {reason}", err=True)


@main.command()
@click.argument("text", required=False)
@click.option("--image", "image_file", type=click.Path(path_type=Path), default=None, help="Search with this image.")
@click.option("--queries-file", type=click.Path(path_type=Path), default=None, help="One text query per line.")
@click.option("--target", type=click.Choice(["image", "text", "all"]), default="image", show_default=True, help="What to return.")
@click.option("-k", "k", type=click.IntRange(1, None), default=10, show_default=True, help="How many results per query.")
@index_dir_option
@device_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line per query.")
def search(text, image_file, queries_file, target, k, index_dir, device, as_json) -> None:
    """Search the index by TEXT, by --image, or by every line of --queries-file."""
    from mmsearch.search import Searcher

    given = sum(x is not None for x in (text, image_file, queries_file))
    if given != 1:
        raise InvalidQueryError("give exactly one of TEXT, --image FILE or --queries-file FILE")
    from mmsearch.threads import configure_batch

    s = _settings(index_dir=index_dir, device=device)
    k = min(k, s.max_k)
    configure_batch(s.threads)
    searcher = Searcher(s.index_dir, device=s.device, threads=s.effective_threads(), reload_interval=0)
    try:
        for query, hits in _run_queries(searcher, text, image_file, queries_file, target, k):
            _print_hits(query, hits, as_json)
    finally:
        searcher.close()


def _run_queries(searcher, text, image_file, queries_file, target, k):
    if text is not None:
        yield text, searcher.search_text(text, target, k)
    elif image_file is not None:
        from indexer.loader import DecodeError, open_image

        try:
            image = open_image(str(image_file))
        except (DecodeError, OSError) as exc:
            raise InvalidQueryError(f"cannot read query image {image_file}: {exc}") from exc
        yield str(image_file), searcher.search_image(image, target, k)
    else:
        try:
            lines = [line.strip() for line in Path(queries_file).read_text(encoding="utf-8").splitlines()]
        except OSError as exc:
            raise InvalidQueryError(f"cannot read {queries_file}: {exc.strerror}") from exc
        queries = [q for q in lines if q]
        if not queries:
            raise InvalidQueryError(f"{queries_file} holds no queries")
        for start in range(0, len(queries), 256):
            chunk = queries[start : start + 256]
            yield from zip(chunk, searcher.search_texts(chunk, target, k))


def _print_hits(query: str, hits, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"query": query, "hits": [h.to_dict() for h in hits]}, ensure_ascii=False))
        return
    click.echo(f"# {query}")
    if not hits:
        click.echo("  (no results: the index holds nothing of that modality)")
    for rank, h in enumerate(hits, 1):
        label = h.path or ""
        snippet = (h.text or "").replace("\n", " ")
        if len(snippet) > 80:
            snippet = snippet[:77] + "..."
        click.echo(f"{rank:>3}. {h.score:.3f} {h.modality:<5} [{h.id}] {label}" + (f"  {snippet}" if snippet else ""))


@main.command()
@index_dir_option
@click.option("--host", default=None, help="Address to bind [default 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port [default 8000].")
@device_option
def serve(index_dir, host, port, device) -> None:
    """Serve the HTTP API (and OpenAPI docs at /docs)."""
    import uvicorn

    from mmsearch.api import create_app

    s = _settings(index_dir=index_dir, host=host, port=port, device=device)
    from mmsearch.indexdir import IndexDir

    IndexDir(s.index_dir).read_manifest()  # fail now, with one line, rather than inside the server
    uvicorn.run(create_app(s), host=s.host, port=s.port, log_level="info", workers=1)


@main.command()
@index_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(index_dir, as_json) -> None:
    """Describe an index: model, counts, last run."""
    from mmsearch.indexdir import describe

    facts = describe(_settings(index_dir=index_dir).index_dir)
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    for key, value in facts.items():
        click.echo(f"{key:>18}: {value}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
