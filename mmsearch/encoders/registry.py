"""Turn a model spec string into a ready encoder.

Spec forms:
* ``mmsearch-lite`` (default), ``mmsearch-lite:/path/weights.safetensors`` - the built-in dual encoder;
* ``mmsearch-tiny-random`` - a tiny random-weight open_clip model for tests (deterministic, no download);
* ``ARCH:TAG`` - an open_clip architecture with a pretrained tag, e.g. ``ViT-B-32:laion2b_s34b_b79k``
  (downloads on first use, so it needs network);
* ``ARCH:/path/to/checkpoint.pt`` - an open_clip architecture with a local checkpoint;
* ``/path/to/config.json:/path/to/checkpoint.pt`` - a custom architecture registered from its JSON config;
* ``hf-hub:org/repo`` or ``local-dir:/path`` - passed to open_clip as is.

The registry sits on top of independent backends, each importable alone: the torch model
(``torch_encoder``, ``lite``), the OpenVINO towers (``openvino_tower``, ``openvino_text``, ``openvino_int8``,
sharing ``openvino_common``) and the load from cached graphs (``compiled``). Importing it imports no
torch: a one-shot query on the default model's cached graphs never needs it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mmsearch.encoders.base import Encoder
from mmsearch.encoders.colour_channel import reported_model_id, with_colour_channel
from mmsearch.encoders.devices import resolve_device
from mmsearch.encoders.hub_channel import reported_hub_model_id, with_hub_channel
from mmsearch.encoders.lite_files import BRIDGE_WEIGHTS, LITE_NAME, lite_config, make_preprocess
from mmsearch.encoders.specs import lite_weights, lite_weights_path, split_spec
from mmsearch.errors import ModelNotFoundError
from mmsearch.hashing import sha256_file

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
TEST_MODEL = "mmsearch-tiny-random"
_configs_registered = False


def _register_configs() -> None:
    global _configs_registered
    if not _configs_registered:
        import open_clip

        open_clip.add_model_config(CONFIG_DIR)
        _configs_registered = True


def _quiet_transformers() -> None:
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except Exception:  # transformers is optional for pure open_clip models
        pass


def _build_open_clip(spec: str, arch: str, pretrained: str | None):
    import open_clip
    import torch

    _register_configs()
    if arch.endswith(".json"):
        config_path = Path(arch).expanduser()
        if not config_path.is_file():
            raise ModelNotFoundError(f"model config {config_path} does not exist")
        open_clip.add_model_config(config_path)
        arch = config_path.stem
    if arch == TEST_MODEL:
        torch.manual_seed(0)  # random weights, but the same ones every time
        if not (pretrained and Path(pretrained).expanduser().is_file()):
            pretrained = None  # a fine-tuned checkpoint of the tiny model still loads (tests of `mmsearch train`)
    elif pretrained is None and not arch.startswith(("hf-hub:", "local-dir:")):
        raise ModelNotFoundError(
            f"model spec {spec!r} names no weights: use ARCH:PRETRAINED_TAG (e.g. ViT-B-32:laion2b_s34b_b79k) "
            "or ARCH:/path/to/checkpoint.pt"
        )
    if pretrained and Path(pretrained).expanduser().exists():
        pretrained = str(Path(pretrained).expanduser())
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained)
        tokenizer = open_clip.get_tokenizer(arch)
    except RuntimeError as exc:
        raise ModelNotFoundError(f"cannot load model {spec!r}: {exc}") from exc
    except Exception as exc:  # network errors, missing files, bad tags all end here
        raise ModelNotFoundError(f"cannot load model {spec!r}: {type(exc).__name__}: {exc}") from exc
    if pretrained and Path(pretrained).exists():
        fingerprint = sha256_file(pretrained)[:12]
        model_id = f"{arch}@{fingerprint}"
    else:
        model_id = spec
    return model, preprocess, tokenizer, model_id


def _build_lite(weights: str | None):
    from mmsearch.encoders.lite import load_lite, load_lite_bridge

    if weights == BRIDGE_WEIGHTS:  # mmsearch-lite:bridge, the training-free bridge alone (eval's baseline)
        return load_lite_bridge()
    return load_lite(lite_weights_path(weights))


def preprocess_without_model(spec: str):
    """The image preprocessing ``load_encoder(spec)`` will use, when it can be had without building the
    model (mmsearch-lite: from the weights file's metadata), else None.

    The indexer uses it to start decoding images while the model loads (seconds of imports and weight
    loading), and so that its decode workers are forked from a process that has not loaded OpenVINO."""
    arch, weights = split_spec(spec)
    if arch != LITE_NAME:
        return None
    return make_preprocess(lite_config(lite_weights(weights)))


def load_encoder(
    spec: str,
    device: str = "auto",
    batch_size: int = 64,
    threads: int = 0,
    precision: str | None = None,
    image_backend: str | None = None,
    text_backend: str | None = None,
    colour: str | None = None,
    text_threads: int = 0,
    hubs: str | None = None,
) -> Encoder:
    """Build the encoder a spec names. ``threads`` caps torch's intra-op pool (0 = leave as is) and sets
    the compiled towers' threads; ``text_threads`` those of the compiled text tower alone (0 = ``threads``:
    a server gives it fewer, see mmsearch.threads.serving_text_threads);
    ``precision`` is auto|fp32|bf16|fp16 (None = the MMSEARCH_PRECISION setting); ``image_backend`` is
    auto|torch|openvino (None = the MMSEARCH_IMAGE_BACKEND setting, see mmsearch.encoders.openvino_tower).

    The default model on CPU is read from its cached compiled graphs when they are all there
    (mmsearch.encoders.compiled); otherwise the torch model is built and its towers compiled as set.
    Either way an mmsearch-lite encoder gets the colour channel its weights' colour config asks for
    (``colour``: auto|off, None = the MMSEARCH_COLOUR setting; see mmsearch.encoders.colour_channel)
    and then the hub channel of the hub file beside its weights (``hubs``: auto|off, None =
    MMSEARCH_HUBS; mmsearch.encoders.hub_channel), here, once, on top of whichever backend runs it."""
    device = resolve_device(device)
    arch, pretrained = split_spec(spec)
    if None in (precision, image_backend, text_backend, colour, hubs):
        from mmsearch.config import get_settings

        precision = precision or get_settings().precision
        image_backend = image_backend or get_settings().image_backend
        text_backend = text_backend or get_settings().text_backend
        colour = colour or get_settings().colour
        hubs = hubs or get_settings().hubs
    backends = (image_backend, text_backend)
    if arch != LITE_NAME:
        return _load_full(spec, arch, pretrained, device, batch_size, threads, precision, backends, text_threads)
    full_load = lambda: _load_full(spec, arch, pretrained, device, batch_size, threads, precision, backends, text_threads)  # noqa: E731
    encoder = (_load_compiled_lite(spec, pretrained, device, batch_size, threads, precision, backends, full_load, text_threads)
               or full_load())
    weights = lite_weights(pretrained)
    return with_hub_channel(with_colour_channel(encoder, weights, colour), weights, hubs)


def reported_lite_model_id(weights: Path | None, colour: str, hubs: str) -> str:
    """The model id ``load_encoder`` reports for mmsearch-lite with ``weights`` under these channel settings
    (auto|off), found without loading the model: the channels in the order ``load_encoder`` stacks them."""
    return reported_hub_model_id(weights, reported_model_id(weights, colour), hubs)


def _load_full(spec: str, arch: str, pretrained: str | None, device: str, batch_size: int, threads: int, precision: str,
               backends: tuple[str, str], text_threads: int = 0) -> Encoder:
    """Build the torch model and compile its towers as ``backends`` (image, text) ask."""
    import torch

    from mmsearch.encoders.torch_encoder import TorchDualEncoder

    if threads:
        torch.set_num_threads(threads)
    image_backend, text_backend = backends
    _quiet_transformers()
    if arch == LITE_NAME:
        model, preprocess, tokenizer, model_id = _build_lite(pretrained)
    else:
        model, preprocess, tokenizer, model_id = _build_open_clip(spec, arch, pretrained)
    log.info("model %s (%s) on %s", spec, model_id, device)
    encoder = TorchDualEncoder(
        model, preprocess, tokenizer, spec=spec, model_id=model_id, device=device, batch_size=batch_size, precision=precision
    )
    _attach_image_backend(encoder, image_backend, threads)
    _attach_text_backend(encoder, text_backend, text_threads or threads)
    return encoder


def _load_compiled_lite(spec: str, weights: str | None, device: str, batch_size: int, threads: int, precision: str,
                        backends: tuple[str, str], full_load, text_threads: int = 0) -> Encoder | None:
    """mmsearch-lite from its cached graphs when both towers would run on OpenVINO anyway, else None
    (``full_load()`` takes over the image side if its graph fails at first use)."""
    from mmsearch.encoders.compiled import load_compiled_lite
    from mmsearch.encoders.openvino_common import resolve_image_backend
    from mmsearch.encoders.openvino_text import resolve_text_backend
    from mmsearch.encoders.precision import resolve_precision
    from mmsearch.threads import available_cores

    resolved = resolve_precision(precision, device)
    if (resolve_image_backend(backends[0], spec, device), resolve_text_backend(backends[1], spec, device)) != ("openvino", "openvino"):
        return None
    if resolved not in ("fp32", "bf16"):
        return None
    threads = threads or available_cores()
    return load_compiled_lite(spec, lite_weights(weights), batch_size=batch_size, threads=threads,
                              text_threads=text_threads or threads, precision=resolved, fallback=full_load)


def _attach_image_backend(encoder, requested: str, threads: int) -> None:
    import torch

    from mmsearch.encoders.openvino_common import resolve_image_backend
    from mmsearch.encoders.openvino_int8 import choose_image_tower
    from mmsearch.encoders.openvino_tower import accept_uint8_pixels, build_openvino_tower, torch_image_reference

    image_size, threads = encoder.input_size or 224, threads or torch.get_num_threads()
    _attach_compiled_tower(
        "image", requested, resolve_image_backend(requested, encoder.spec, encoder.device),
        lambda: accept_uint8_pixels(choose_image_tower(
            model_id=encoder.model_id, image_size=image_size, precision=encoder.precision, threads=threads,
            reference=torch_image_reference(encoder.model),
            float_tower=lambda: build_openvino_tower(
                encoder.model, model_id=encoder.model_id, image_size=image_size, precision=encoder.precision, threads=threads),
        ), encoder.image_transform),
        encoder.use_image_runner, encoder.precision,
    )


def _attach_text_backend(encoder, requested: str, threads: int) -> None:
    import torch

    from mmsearch.encoders.openvino_text import build_openvino_text_tower, resolve_text_backend

    _attach_compiled_tower(
        "text", requested, resolve_text_backend(requested, encoder.spec, encoder.device, encoder.model),
        lambda: build_openvino_text_tower(
            encoder.model, encoder.tokenizer, model_id=encoder.model_id, precision=encoder.precision,
            threads=threads or torch.get_num_threads(),
        ),
        encoder.use_text_runner, encoder.precision,
    )


def _attach_compiled_tower(kind: str, requested: str, resolved: str, build, use, precision: str) -> None:
    """Compile a tower when the backend resolved to OpenVINO; ``auto`` falls back to torch on any failure
    (logged), an explicit ``openvino`` re-raises it."""
    from mmsearch.errors import ImageBackendError, TextBackendError

    if resolved != "openvino":
        log.info("%s tower: torch %s", kind, precision)
        return
    try:
        tower = build()
    except (ImageBackendError, TextBackendError) as exc:
        if requested == "openvino":
            raise
        log.warning("%s; using torch for %ss", exc, kind)
        return
    use(tower, tower.describe())


def image_backend_summary(spec: str, requested: str, device: str) -> str:
    """What would run a model's image tower here, said without loading it (for `mmsearch info`)."""
    from mmsearch.encoders.openvino_common import cache_root, openvino_available, resolve_image_backend
    from mmsearch.errors import MmsearchError

    try:
        backend = resolve_image_backend(requested, spec, resolve_device(device))
    except MmsearchError as exc:
        return f"unavailable: {exc}"
    if backend == "openvino":
        from mmsearch.encoders.openvino_int8 import graph_precision_summary

        precision = graph_precision_summary(spec, resolve_device(device))
        return f"openvino {precision} (MMSEARCH_IMAGE_BACKEND={requested}; compiled graphs cached in {cache_root()})"
    hint = "; pip install 'mmsearch[openvino]' for the faster CPU path" if requested == "auto" and not openvino_available() else ""
    return f"torch (MMSEARCH_IMAGE_BACKEND={requested}{hint})"
