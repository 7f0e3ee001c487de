"""Where open_clip looks for the weights of ``ARCH:TAG``, what is already there, and how to put a checkpoint
there by hand (an air-gapped machine).

What open_clip 3.x reads for a pretrained tag (``open_clip/pretrained.py``, ``download_pretrained``): every
tag of its registry names a Hugging Face Hub repo (``hf_hub``, e.g. ``laion/CLIP-ViT-B-32-laion2B-s34B-b79K/``
for ``ViT-B-32:laion2b_s34b_b79k``), optionally with a file name; with ``huggingface_hub`` installed (a
dependency of mmsearch) the hub is preferred over the tag's URL. ``download_pretrained_from_hf`` then asks
``hf_hub_download`` (revision ``main``, the default cache) for the safetensors alternative first
(``open_clip_model.safetensors`` for the default ``open_clip_pytorch_model.bin``; ``x.safetensors`` for a
named ``x.bin``/``x.pth``), then for the file itself. ``hf_hub_download`` serves a cached file from the hub
cache (``$HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``)::

    models--{org}--{name}/refs/main                      -> the commit hash "main" points at
    models--{org}--{name}/snapshots/{commit}/{filename}  -> a link to ../../blobs/{sha256}
    models--{org}--{name}/blobs/{sha256}                 -> the file's bytes

With ``HF_HUB_OFFLINE=1`` it never touches the network; without it, it asks the hub first and falls back
to the cache when the hub cannot be reached. open_clip's own cache (``~/.cache/clip``) only receives
downloads from a tag's URL, which open_clip uses when ``huggingface_hub`` is missing; such files are usable
here as ``ARCH:/path/to/file``. Some architectures also read their tokenizer or text model config from a
hub repo (``hf_tokenizer_name``/``hf_model_name`` in their config); those repos must be in the hub cache too.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from mmsearch.errors import ConfigError, ModelNotFoundError

log = logging.getLogger(__name__)

WEIGHTS_NAME = "open_clip_pytorch_model.bin"  # open_clip.constants.HF_WEIGHTS_NAME
SAFE_WEIGHTS_NAME = "open_clip_model.safetensors"  # open_clip.constants.HF_SAFE_WEIGHTS_NAME
CONFIG_NAME = "open_clip_config.json"


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache hf_hub_download reads ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def openclip_cache_dir() -> Path:
    """open_clip's own download cache for tag URLs (``download_pretrained_from_url``'s default)."""
    return Path(os.path.expanduser("~/.cache/clip"))


@dataclass(frozen=True)
class HubTarget:
    """The hub repo and the file names open_clip asks for, in the order it asks."""

    repo_id: str
    filenames: tuple[str, ...]


def _safe_alternatives(filename: str) -> list[str]:
    """As open_clip.pretrained._get_safe_alternatives: the safetensors names tried before ``filename``."""
    if filename == WEIGHTS_NAME:
        return [SAFE_WEIGHTS_NAME]
    if filename.endswith((".bin", ".pth")):
        return [filename[:-4] + ".safetensors"]
    return []


def hub_target(arch: str, tag: str) -> HubTarget:
    """Where open_clip reads ``ARCH:TAG``'s weights from; an unknown pair is ModelNotFoundError naming the known tags."""
    from open_clip import pretrained

    cfg = pretrained.get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = pretrained.list_pretrained_tags_by_model(arch)
        known = f"its tags: {', '.join(tags)}" if tags else "no such open_clip architecture with pretrained weights"
        raise ModelNotFoundError(f"{arch}:{tag} is not an open_clip pretrained tag ({known})")
    hub = cfg.get("hf_hub", "")
    if not hub:
        raise ModelNotFoundError(f"{arch}:{tag} is only downloadable from {cfg.get('url')}: use {arch}:/path/to/that/file instead")
    repo_id, filename = os.path.split(hub)
    filename = filename or WEIGHTS_NAME
    return HubTarget(repo_id, tuple(_safe_alternatives(filename) + [filename]))


def _repo_dir(cache: Path, repo_id: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--"))


def cached_weights(arch: str, tag: str, cache: Path | None = None) -> Path | None:
    """The file open_clip would load for ``ARCH:TAG`` from the hub cache without network, if there."""
    from huggingface_hub import try_to_load_from_cache

    target = hub_target(arch, tag)
    for name in target.filenames:
        found = try_to_load_from_cache(target.repo_id, name, cache_dir=str(cache or hub_cache_dir()))
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


def extra_hub_repos(arch: str) -> list[str]:
    """Hub repos an architecture reads besides its weights (tokenizer, text model config)."""
    import open_clip

    cfg = open_clip.get_model_config(arch) or {}
    text = cfg.get("text_cfg", {}) or {}
    return sorted({name for name in (text.get("hf_tokenizer_name"), text.get("hf_model_name")) if name})


def repo_cached(repo_id: str, cache: Path | None = None) -> bool:
    """True when the hub cache holds a snapshot of ``repo_id``'s main revision."""
    repo = _repo_dir(cache or hub_cache_dir(), repo_id)
    ref = repo / "refs" / "main"
    return ref.is_file() and (repo / "snapshots" / ref.read_text().strip()).is_dir()


@dataclass
class CachedModel:
    spec: str  # what to pass as --model
    path: Path
    size: int
    where: str  # "hub cache" or "open_clip cache"
    missing: list[str]  # hub repos it also needs that are not cached (tokenizer, text config)


def _tags_by_repo() -> dict[str, list[tuple[str, str]]]:
    from open_clip import pretrained

    out: dict[str, list[tuple[str, str]]] = {}
    for arch, tag in pretrained.list_pretrained():
        hub = pretrained.get_pretrained_cfg(arch, tag).get("hf_hub", "")
        if hub:
            out.setdefault(os.path.split(hub)[0], []).append((arch, tag))
    return out


def find_cached_models(cache: Path | None = None, clip_cache: Path | None = None) -> list[CachedModel]:
    """Every open_clip model whose weights are in the local caches, as the specs that load them."""
    cache = cache or hub_cache_dir()
    found: list[CachedModel] = []
    cached_repos = {p.name[len("models--"):].replace("--", "/") for p in cache.glob("models--*")} if cache.is_dir() else set()
    by_repo = _tags_by_repo()
    for repo_id in sorted(cached_repos):
        for arch, tag in by_repo.get(repo_id, []):
            path = cached_weights(arch, tag, cache)
            if path is not None:
                missing = [r for r in extra_hub_repos(arch) if not repo_cached(r, cache)]
                found.append(CachedModel(f"{arch}:{tag}", path, path.stat().st_size, "hub cache", missing))
        if repo_id not in by_repo:
            config = _cached_file(cache, repo_id, CONFIG_NAME)
            if config is not None:
                found.append(CachedModel(f"hf-hub:{repo_id}", config.parent, _dir_size(config.parent), "hub cache", []))
    found.extend(_clip_cache_models(clip_cache or openclip_cache_dir()))
    return found


def _cached_file(cache: Path, repo_id: str, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=str(cache))
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def _dir_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def _clip_cache_models(clip_cache: Path) -> list[CachedModel]:
    """Files in open_clip's URL download cache, matched to the tags whose URL names them."""
    if not clip_cache.is_dir():
        return []
    from open_clip import pretrained

    by_name: dict[str, list[str]] = {}
    for arch, tag in pretrained.list_pretrained():
        url = pretrained.get_pretrained_cfg(arch, tag).get("url", "")
        if url:
            by_name.setdefault(os.path.basename(url), []).append(arch)
    out = []
    for path in sorted(clip_cache.iterdir()):
        for arch in by_name.get(path.name, [])[:1]:
            out.append(CachedModel(f"{arch}:{path}", path, path.stat().st_size, "open_clip cache", []))
    return out


# --- import ---
def is_safetensors(path: Path) -> bool:
    """The safetensors layout: an 8-byte little-endian header length, then a JSON object."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) < 9:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 0 < length < path.stat().st_size


def check_checkpoint(path: Path, arch: str) -> None:
    """Load ``path`` into a freshly built ``arch`` exactly as open_clip will (strict), so a wrong file is
    refused now rather than at the first index run."""
    import open_clip
    import torch
    from open_clip.factory import load_checkpoint

    model = open_clip.create_model(arch, pretrained=None, device="cpu")
    with torch.no_grad():
        try:
            load_checkpoint(model, str(path), strict=True)
        except Exception as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise ConfigError(f"{path} is not a checkpoint of {arch}: {first[:300]}") from exc


def _copy_with_sha256(source: Path, target: Path) -> str:
    digest = hashlib.sha256()
    tmp = target.with_name(target.name + ".incomplete")
    with open(source, "rb") as src, open(tmp, "wb") as dst:
        for block in iter(lambda: src.read(1 << 20), b""):
            digest.update(block)
            dst.write(block)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, target)
    return digest.hexdigest()


def import_checkpoint(source: Path, arch: str, tag: str, *, cache: Path | None = None, check: bool = True,
                      force: bool = False) -> Path:
    """Copy a checkpoint into the hub cache where open_clip reads ``ARCH:TAG`` -> the snapshot path.

    The file becomes the repo's blob (named by its sha256), linked from the snapshot that ``refs/main``
    points at (a new one, named after the content, when the repo is not cached yet). A file open_clip
    would prefer over it in that snapshot (the other format) is refused unless ``force``."""
    source = Path(source).expanduser()
    if not source.is_file():
        raise ConfigError(f"{source} is not a file")
    target = hub_target(arch, tag)
    safe = is_safetensors(source)
    names = [n for n in target.filenames if n.endswith(".safetensors") == safe]
    if not names:
        raise ConfigError(f"{arch}:{tag} is read from {target.filenames[-1]}, which is not a safetensors file: "
                          f"give a torch checkpoint (torch.save of the state dict)")
    if check:
        check_checkpoint(source, arch)
    cache = cache or hub_cache_dir()
    repo = _repo_dir(cache, target.repo_id)
    for folder in ("blobs", "refs", "snapshots"):
        (repo / folder).mkdir(parents=True, exist_ok=True)
    blob_tmp = repo / "blobs" / f"import-{os.getpid()}"
    sha = _copy_with_sha256(source, blob_tmp)
    blob = repo / "blobs" / sha
    os.replace(blob_tmp, blob)
    ref = repo / "refs" / "main"
    commit = ref.read_text().strip() if ref.is_file() else hashlib.sha1(f"mmsearch-import:{sha}".encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    name = names[0]
    for preferred in target.filenames[: target.filenames.index(name)]:
        shadow = snapshot / preferred
        if shadow.exists() or shadow.is_symlink():
            if not force:
                raise ConfigError(f"{shadow} is already cached and open_clip prefers it to {name}: pass --force to replace it")
            shadow.unlink()
    link = snapshot / name
    if link.exists() or link.is_symlink():
        if not force and link.resolve() != blob.resolve():
            raise ConfigError(f"{arch}:{tag} is already cached ({link}): pass --force to replace it")
        link.unlink()
    try:
        link.symlink_to(os.path.relpath(blob, snapshot))
    except OSError:  # a filesystem without symlinks: the hub library copies too
        shutil.copyfile(blob, link)
    ref.write_text(commit)
    log.info("imported %s as %s:%s -> %s", source, arch, tag, link)
    return link
