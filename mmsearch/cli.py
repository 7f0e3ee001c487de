"""`mmsearch` command line. Library errors become one line on stderr and a non-zero exit."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from pathlib import Path

import click

from mmsearch.cli_collections import collection_option, collections_group, where
from mmsearch.cli_keys import keys
from mmsearch.cli_shop import run_query, shop_search_options, wants_query_engine
from mmsearch.config import Settings
from mmsearch.errors import InvalidQueryError, MmsearchError
from mmsearch.moments import describe as describe_moments

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
        except BrokenPipeError:  # `mmsearch search ... | head`: the reader left, which is not an error
            _silence_stdout()
            ctx.exit(0)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # a bug or an OS failure: still one line, details with -v
            if logging.getLogger().isEnabledFor(logging.INFO):
                raise
            first = (str(exc).splitlines() or [""])[0]
            click.echo(f"error: {type(exc).__name__}: {first} (run with -v for details)", err=True)
            ctx.exit(1)


def run() -> None:
    """The console entry point (``mmsearch``, ``python -m mmsearch``): run the command, then, when it
    succeeded, end the process without the interpreter's teardown.

    Tearing down torch, timm, open_clip and transformers takes ~1.3 s on a 2-core machine and does
    nothing a finished command needs: the store is closed, vector files are fsynced and published, no
    child process is left (checked). So ``mmsearch search "..."`` or an index run returns that much
    sooner. A failed command exits the ordinary way. Tests call :func:`main` itself."""
    import os

    try:
        main()  # standalone mode: always ends in SystemExit
    except SystemExit as exc:
        multiprocessing = sys.modules.get("multiprocessing")  # a command that never imported it started no child
        if exc.code not in (None, 0) or (multiprocessing is not None and multiprocessing.active_children()):
            raise
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a reader that left (`| head`) is not an error
            stream.flush()
    os._exit(0)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so Python's exit-time flush does not raise a second BrokenPipeError."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _ocr_budget(s: Settings):
    from mmsearch.imaging.ocr import OcrBudget

    return OcrBudget(seconds=s.ocr_seconds, max_lines=s.ocr_max_lines)


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


main.add_command(keys)


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@index_dir_option
@click.option("--model", default=None, help="Model spec [default: mmsearch-lite, or the index's own model].")
@click.option("--batch-size", type=int, default=None, help="Items per encoder batch.")
@click.option("--workers", type=int, default=None, help="Image decode worker processes.")
@device_option
@click.option("--catalogue", is_flag=True, help="Read the CSV/JSONL as a product catalogue (detected anyway from sku + title columns).")
@click.option(
    "--index-type", default=None,
    help="Vector index: auto (exact below $MMSEARCH_ANN_THRESHOLD vectors, else IVF), flat, hnsw, ivf, ivfpq, sq8, "
         "or a FAISS index_factory string. Kept for later runs [default: the index's own, else auto].",
)
@click.option("--recall-target", type=click.FloatRange(0.0, 1.0, min_open=True), default=None,
              help="recall@10 against exact search that approximate search is tuned to keep [default 0.95].")
@click.option("--video-interval", type=click.FloatRange(0, None, min_open=True), default=None,
              help="Videos: a frame at every scene change and at least one every this many seconds [default 10, $MMSEARCH_VIDEO_INTERVAL].")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Embed in this process, or in Ray actors (one per GPU, else per CPU slot) of a Ray cluster.")
@click.option("--address", default=None,
              help="With --engine ray: the cluster's HOST:PORT (as `ray start --head` prints) [default: $RAY_ADDRESS, "
                   "else a Ray instance on this machine, started for the run if none runs].")
@collection_option
@click.option("--ocr/--no-ocr", default=None,
              help="Read the text in every image (searchable by keyword, filter has_text). Kept for later runs "
                   "[default: $MMSEARCH_OCR, else the index's own, else off].")
@click.option("--watch", is_flag=True,
              help="Keep running: index again whenever files under PATH are added, changed, renamed or deleted (Ctrl-C stops).")
def index(path: Path, index_dir: Path | None, model: str | None, batch_size: int | None, workers: int | None, device: str | None,
          catalogue: bool, index_type: str | None, recall_target: float | None, video_interval: float | None, engine: str, address: str | None,
          collection: str | None, ocr: bool | None, watch: bool) -> None:
    """Index (or update the index of) a folder, a JSONL/CSV manifest, or a product catalogue."""
    from indexer.pipeline import index_source
    from mmsearch.encoders.registry import preprocess_without_model
    from mmsearch.threads import configure_batch

    if address is not None and engine != "ray":
        raise click.UsageError("--address needs --engine ray")
    s = _settings(index_dir=index_dir, batch_size=batch_size, workers=workers, device=device, ocr=ocr,
                  video_interval=video_interval)
    target = where(s, collection)
    configure_batch(s.threads)
    with _embedding_engine(engine, address, s) as (encoder_factory, embed_stage):
        model_once = _LoadOnce(encoder_factory)

        def run_once():
            # Decode workers are forked only while no model is loaded in this process (a process that
            # has loaded OpenVINO must not fork); once it is, watch batches decode here: they are small.
            fresh = not model_once.loaded or embed_stage is not None
            return index_source(
                path, target.path,
                model_once,
                model_spec=model, default_model=s.model, batch_size=s.batch_size, workers=s.workers if fresh else 0,
                max_pixels=s.max_image_pixels, catalogue=catalogue,
                index_type=index_type, recall_target=recall_target, flat_threshold=s.ann_threshold, embed_stage=embed_stage,
                database_url=target.database_url, preprocess_for=preprocess_without_model if fresh and not embed_stage else None,
                ocr=s.ocr, ocr_budget=_ocr_budget(s), progress=None if not watch else False, media=_media_options(s),
            )

        if not watch:
            _echo_report(run_once())
            return
        from indexer.watch import watch as watch_folder

        click.echo(f"watching {Path(path).resolve()} (Ctrl-C stops)")
        watch_folder(path, run_once, ignored=(target.path,), on_report=lambda r: _echo_report(r, stamp=True))


class _LoadOnce:
    """The model loader, loading at most once: watch mode keeps the model between its runs."""

    def __init__(self, factory) -> None:
        self.factory, self.encoder, self.spec = factory, None, None

    @property
    def loaded(self) -> bool:
        return self.encoder is not None

    def __call__(self, spec: str):
        if self.encoder is None or spec != self.spec:
            self.encoder, self.spec = self.factory(spec), spec
        return self.encoder


def _echo_report(report, stamp: bool = False) -> None:
    when = time.strftime("%H:%M:%S ") if stamp else ""
    click.echo(
        f"{when}indexed {report.source} -> {report.index_dir} in {report.seconds:.1f}s: "
        f"{report.added} added, {report.reembedded} re-embedded, {report.moved} moved, {report.updated} updated, "
        f"{report.removed} removed, {report.unchanged} unchanged, {len(report.failures)} failed; "
        f"index holds {report.counts.get('image', 0)} images, {report.counts.get('text', 0)} texts"
    )
    for key, reason in report.failures:
        click.echo(f"  skipped {key}: {reason}", err=True)
    for key, note in report.notes:
        click.echo(f"  note {key}: {note}", err=True)


def _media_options(s: Settings):
    """How videos and PDFs are read, from the settings."""
    from indexer.units import MediaOptions
    from mmsearch.imaging.video import VideoSampling

    sampling = VideoSampling(s.video_interval, s.video_scene_threshold, s.video_max_frames)
    return MediaOptions(sampling=sampling, pdf_max_pages=s.pdf_max_pages)


@contextlib.contextmanager
def _embedding_engine(engine: str, address: str | None, s: Settings):
    """(model loader, embed stage) for index_source: the model in this process, or Ray actors.
    The local engine never imports Ray."""
    if engine == "ray":
        from indexer.ray_engine import RayEngine

        with RayEngine(address, device=s.device, precision=s.precision, batch_size=s.batch_size, workers=s.workers) as ray_engine:
            yield ray_engine.load_encoder, ray_engine.embed
        return
    from mmsearch.encoders import load_encoder

    yield (lambda spec: load_encoder(spec, s.device, s.batch_size, s.effective_threads(), s.precision)), None


@main.command()
@click.argument("text", required=False)
@click.option("--image", "image_file", type=click.Path(path_type=Path), default=None, help="Search with this image.")
@click.option("--queries-file", type=click.Path(path_type=Path), default=None, help="One text query per line.")
@click.option("--target", type=click.Choice(["image", "text", "all"]), default="image", show_default=True, help="What to return.")
@click.option("-k", "k", type=click.IntRange(1, None), default=10, show_default=True, help="How many results per query.")
@index_dir_option
@device_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line per query.")
@collection_option
@shop_search_options
def search(text, image_file, queries_file, target, k, index_dir, device, as_json, collection=None, **shop) -> None:
    """Search the index by TEXT, by --image, or by every line of --queries-file.

    Filters, keyword/hybrid modes, weighted and negative terms, grouping and paging: see docs/search.md."""
    from mmsearch.search import Searcher
    from mmsearch.threads import configure_batch

    composite = wants_query_engine(text, image_file, queries_file, shop)
    if not composite and sum(x is not None for x in (text, image_file, queries_file)) != 1:
        raise InvalidQueryError("give exactly one of TEXT, --image FILE or --queries-file FILE")
    s = _settings(index_dir=index_dir, device=device)
    k = min(k, s.max_k)
    configure_batch(s.threads)
    place = where(s, collection)
    searcher = Searcher(place.path, device=s.device, threads=s.effective_threads(), reload_interval=0, faiss_device=s.faiss_device,
                        database_url=place.database_url)
    try:
        if composite:
            run_query(searcher, text, image_file, target, k, as_json, shop)
            return
        for query, hits in _run_queries(searcher, text, image_file, queries_file, target, k):
            _print_hits(query, hits, as_json)
    finally:
        searcher.close()


def _run_queries(searcher, text, image_file, queries_file, target, k):
    if text is not None:
        yield text, searcher.search_text(text, target, k)
    elif image_file is not None:
        from mmsearch.imaging.decode import DecodeError, open_image

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
        if h.snippet:
            click.echo(f"       text in image: {h.snippet}")
        if h.moments:
            click.echo(f"       {describe_moments(h.moments)}")


@main.command()
@index_dir_option
@click.option("--threshold", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.95, show_default=True,
              help="Visual similarity two pictures must reach to count as copies (edited copies score ~0.99, different pictures < ~0.9).")
@click.option("--neighbours", type=click.IntRange(1, 256), default=8, show_default=True, help="Nearest neighbours checked per picture (more when they all qualify).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def duplicates(index_dir, threshold, neighbours, as_json) -> None:
    """List groups of near-identical images (resized, recompressed, cropped a little, EXIF stripped), best copy first."""
    from mmsearch.duplicates import DuplicateOptions, duplicates_in_index
    from mmsearch.search import Searcher

    s = _settings(index_dir=index_dir)
    searcher = Searcher(s.index_dir, reload_interval=0, faiss_device="cpu", database_url=s.database())
    try:
        report = duplicates_in_index(searcher, DuplicateOptions(threshold=threshold, neighbours=neighbours),
                                     max_pixels=s.max_image_pixels, threads=s.effective_threads(), flat_threshold=s.ann_threshold)
    finally:
        searcher.close()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
        return
    for number, group in enumerate(report.groups, 1):
        click.echo(f"# group {number}: {len(group.copies)} copies")
        for rank, copy in enumerate(group.copies):
            size = f"{copy.width}x{copy.height}" if copy.width else "?"
            label = "keep" if rank == 0 else f"{copy.similarity:.3f}"
            click.echo(f"  {label:>5} [{copy.id}] {copy.path}  {size}  {copy.taken or ''}")
    extra = f", {report.unreadable} unreadable" if report.unreadable else ""
    click.echo(f"{len(report.groups)} groups of near-duplicates among {report.images} images ({report.confirmed} pairs{extra}) "
               f"in {report.seconds:.1f}s")


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
    from mmsearch.storage import collections as colls
    from mmsearch.storage.indexdir import IndexDir

    if not colls.list_names(s.index_dir, s.database()):  # no index to serve: fail now, with one line, not inside the server
        IndexDir(s.index_dir, s.database()).read_manifest()
    uvicorn.run(create_app(s), host=s.host, port=s.port, log_level="info", workers=1)


@main.command()
@index_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@collection_option
def info(index_dir, as_json, collection=None) -> None:
    """Describe an index: model, counts, last run."""
    from mmsearch.encoders.registry import image_backend_summary
    from mmsearch.storage.indexdir import describe

    s = _settings(index_dir=index_dir)
    place = where(s, collection)
    facts = describe(place.path, place.database_url, s.faiss_device)
    facts["image_backend"] = image_backend_summary(facts["model"], s.image_backend, s.device)
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    for key, value in facts.items():
        click.echo(f"{key:>18}: {value}")


@main.command()
@index_dir_option
@click.option("--repair", is_flag=True, help="Re-embed items whose vector is missing, drop orphans, rewrite the vector files.")
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@collection_option
@click.pass_context
def verify(ctx, index_dir, repair, device, as_json, collection=None) -> None:
    """Check that the vector files and the database agree (exit 1 if problems remain)."""
    from mmsearch.verify import repair_index, verify_index

    s = _settings(index_dir=index_dir, device=device)
    place = where(s, collection)
    if repair:
        from mmsearch.encoders import load_encoder

        report = repair_index(
            place.path, lambda spec: load_encoder(spec, s.device, s.batch_size, s.effective_threads()), max_pixels=s.max_image_pixels,
            database_url=place.database_url,
        )
    else:
        report = verify_index(place.path, place.database_url)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for line in report.repaired:
            click.echo(f"repaired: {line}")
        for problem in report.problems:
            hint = "" if problem.repairable or repair else " (not repairable)"
            click.echo(f"problem [{problem.kind}]: {problem.detail}{hint}")
        counts = ", ".join(f"{k} {v}" for k, v in report.counts.items())
        click.echo(f"{report.index_dir}: " + ("ok" if report.ok else f"{len(report.problems)} problem(s)") + (f" ({counts})" if counts else ""))
    if not report.ok:
        ctx.exit(1)


@main.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--val", type=click.Path(path_type=Path), default=None, help="Validation manifest: per-epoch recall, best-epoch choice, tuning.")
@click.option("--model", default="mmsearch-lite", show_default=True, help="mmsearch-lite[:weights], or an open_clip ARCH:TAG / ARCH:/path/ckpt.pt to fine-tune.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Output weights (.safetensors for mmsearch-lite, .pt checkpoint for open_clip).")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--batch-size", type=int, default=None, help="Pairs per step [default: 256 lite, 32 open_clip].")
@click.option("--lr", type=float, default=None, help="Learning rate [default: 1e-3 lite heads, 1e-5 open_clip].")
@click.option("--lock-image/--no-lock-image", default=None, help="Freeze the image tower [default: frozen for lite, trained for open_clip].")
@click.option("--unlock-image-top", type=int, default=0, help="With a locked image tower, train its top N blocks (open_clip).")
@click.option("--lock-text/--no-lock-text", default=None, help="Freeze the text tower [default: frozen for lite, trained for open_clip].")
@click.option("--unlock-text-top", type=int, default=0, help="With a locked text tower, train its top N layers (open_clip).")
@click.option("--augment/--no-augment", default=True, show_default=True, help="Random crops and colour jitter.")
@click.option("--flip/--no-flip", default=True, show_default=True, help="Horizontal flips (turn off when left/right or lettering matters).")
@click.option("--style-augment/--no-style-augment", default=False, show_default=True,
              help="Art-style changes in augmented views (greyscale, strong colour, posterise, blur, traced outlines): for unseen drawing styles.")
@click.option("--aug-views", type=int, default=4, show_default=True, help="Augmented views cached per image (mmsearch-lite).")
@click.option("--templates", default=None, help='Concept templates, e.g. "a picture of {}|an emoji of {}".')
@click.option("--head-design", type=click.Choice(["residual", "lit", "mlp"]), default="residual", show_default=True,
              help="mmsearch-lite heads: residual = MiniLM text space + trained residual; lit = text locked to MiniLM; mlp = both sides projected.")
@click.option("--head-hidden", type=int, default=None, help="Hidden width of the mmsearch-lite heads [default 512].")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=Path(".mmsearch-cache"), show_default=True, help="Tower feature cache.")
@click.option("--resume", is_flag=True, help="Continue from the last epoch checkpoint of --out.")
@device_option
@click.option("--threads", type=int, default=None, help="torch threads [default: $MMSEARCH_THREADS or all cores].")
@click.option("--seed", type=int, default=0, show_default=True)
def train(source, val, model, out, epochs, batch_size, lr, lock_image, unlock_image_top, lock_text, unlock_text_top, augment, flip,
          aug_views, templates, head_design, head_hidden, cache_dir, resume, device, threads, seed, style_augment=False) -> None:
    """Train (or fine-tune) a dual encoder contrastively on a manifest or a captioned folder."""
    from mmsearch.train.augment import AugmentConfig, parse_templates
    from mmsearch.train.options import TrainOptions
    from mmsearch.train.run import train as run_training

    s = _settings(device=device, threads=threads)
    opts = TrainOptions(
        source=source, val=val, model=model, out=out, epochs=epochs, batch_size=batch_size, lr=lr, lock_image=lock_image,
        unlock_image_top=unlock_image_top, lock_text=lock_text, unlock_text_top=unlock_text_top,
        augment=AugmentConfig(enabled=augment, flip=flip, style=style_augment), aug_views=aug_views, templates=parse_templates(templates),
        head_design=head_design, head_hidden=head_hidden, cache_dir=cache_dir, resume=resume, device=s.device, seed=seed, threads=s.effective_threads(),
    )
    result = run_training(opts, on_epoch=lambda entry: click.echo(entry.line()))
    click.echo(f"wrote {result.out} (best epoch {result.best_epoch})")


@main.command("eval")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--model", default=None, help="Model spec [default: mmsearch-lite].")
@click.option("--baseline", default=None, help="A second model to compare; mmsearch-lite:bridge is the training-free bridge alone.")
@click.option("-k", "ks", default="1,5,10", show_default=True, help="Comma-separated cut-offs.")
@click.option("--json-out", type=click.Path(path_type=Path), default=None, help="Also write the results as JSON.")
@click.option("--index-dir", type=click.Path(path_type=Path), default=None, help="Keep the evaluation indexes here (one subfolder per model) [default: a temp dir].")
@click.option("--batch-size", type=int, default=None, help="Items per encoder batch.")
@click.option("--by", "by", default=None, help="Also report recall per value of this manifest column (e.g. category).")
@device_option
def eval_command(manifest, model, baseline, ks, json_out, index_dir, batch_size, by, device) -> None:
    """Recall@k (text->image and image->text) through the index and search path."""
    from mmsearch.train.evaluate import default_encoder_factory, evaluate, format_breakdown, format_table, parse_ks

    s = _settings(device=device, batch_size=batch_size)
    specs = [model or s.model] + ([baseline] if baseline else [])
    result = evaluate(
        manifest, specs, ks=parse_ks(ks), index_dir=index_dir,
        encoder_factory=default_encoder_factory(s.device, s.batch_size, s.effective_threads()), batch_size=s.batch_size,
        workers=min(s.workers, 1), by=by,
    )
    click.echo(format_table(result))
    if by:
        click.echo(format_breakdown(result))
    if json_out:
        json_out.write_text(json.dumps(result, indent=2), encoding="utf-8")


main.add_command(collections_group)


def _register_model_commands() -> None:
    from mmsearch.cli_models import calibrate, models

    main.add_command(models)
    main.add_command(calibrate)


_register_model_commands()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
