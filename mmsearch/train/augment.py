"""Image augmentation and text sampling for contrastive training.

Augmentations keep what a caption says true: crops keep most of the picture, colour jitter is mild
(colour words appear in captions), and horizontal flips can be turned off for data where left/right or
written text matters.

``style=True`` adds art-style changes, so heads trained on a few artwork styles see the same concept
drawn differently (a new icon set is mostly a change of palette, shading and line work, not of shape):
greyscale, strong colour jitter, posterised flat colours, blur, and dark outlines traced along edges
(the line-art look of sets like openmoji).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch
from PIL import Image, ImageChops, ImageFilter, ImageOps
from torchvision import transforms as T

from mmsearch.encoders.base import transform_input_size
from mmsearch.errors import ConfigError

DEFAULT_TEMPLATES = ("a picture of {}", "an image of {}", "{}", "an icon of {}", "a drawing of {}")


@dataclass(frozen=True)
class AugmentConfig:
    enabled: bool = True
    min_scale: float = 0.6
    flip: bool = True
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.2
    hue: float = 0.02
    style: bool = False

    def key(self) -> str:
        """Identifies the augmentation recipe in cache keys: a different recipe means different views.
        ``style`` enters the key only when on, so caches of earlier plain recipes stay valid."""
        recipe = asdict(self)
        if not self.style:
            recipe.pop("style")
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


class TraceOutlines:
    """Draws dark lines along the picture's edges (with probability ``p``), optionally over flattened
    colours: emoji sets differ most in line work, and outlined line art is a common icon style."""

    def __init__(self, p: float = 0.5, width: int = 3) -> None:
        self.p, self.width = p, width

    def __call__(self, image: Image.Image) -> Image.Image:
        if random.random() >= self.p:
            return image
        rgb = image.convert("RGB")
        edges = ImageOps.grayscale(rgb).filter(ImageFilter.FIND_EDGES).point(lambda v: 255 if v > 40 else 0)
        edges = ImageOps.expand(ImageOps.crop(edges, 2), 2, fill=0)  # no frame along the picture's border
        edges = edges.filter(ImageFilter.MaxFilter(self.width | 1))
        if random.random() < 0.5:  # flat, lighter fills like line-art icon sets
            rgb = Image.blend(ImageOps.posterize(rgb, 3), Image.new("RGB", rgb.size, "white"), 0.3)
        return Image.composite(Image.new("RGB", rgb.size, "black"), rgb, edges)


class RandomInvertLightness:
    """Swaps light and dark (with probability ``p``) on a picture whose background stays white:
    the shape survives while shading flips, a cheap stand-in for very different palettes."""

    def __init__(self, p: float = 0.1) -> None:
        self.p = p

    def __call__(self, image: Image.Image) -> Image.Image:
        if random.random() >= self.p:
            return image
        rgb = image.convert("RGB")
        mask = ImageOps.grayscale(ImageChops.difference(rgb, Image.new("RGB", rgb.size, "white"))).point(lambda v: 255 if v > 8 else 0)
        return Image.composite(ImageOps.invert(rgb), rgb, mask)


def style_steps() -> list:
    """PIL-level art-style changes applied before the tensor conversion."""
    return [
        TraceOutlines(p=0.4),
        T.RandomApply([T.ColorJitter(0.4, 0.5, 0.8, 0.3)], p=0.6),
        T.RandomPosterize(bits=3, p=0.25),
        RandomInvertLightness(p=0.1),
        T.RandomGrayscale(p=0.25),
        T.RandomApply([T.GaussianBlur(5, sigma=(0.3, 1.5))], p=0.25),
    ]


def find_normalize(preprocess: Callable) -> Callable[[torch.Tensor], torch.Tensor]:
    """The Normalize step of a model's eval preprocess (torchvision's or mmsearch.imaging.preprocess's):
    training views must be normalised identically."""
    for step in getattr(preprocess, "transforms", []):
        if type(step).__name__ == "Normalize":
            return step
    raise ConfigError("the model's preprocessing has no Normalize step; cannot build training augmentation")


def find_image_size(preprocess: Callable) -> int:
    size = transform_input_size(preprocess)
    if size is None:
        raise ConfigError("cannot tell the model's input size from its preprocessing")
    return size


def train_transform(preprocess: Callable, cfg: AugmentConfig) -> Callable[[Image.Image], torch.Tensor]:
    """A random view of an image, normalised like ``preprocess``. Without augmentation: ``preprocess`` itself."""
    if not cfg.enabled:
        return preprocess
    size = find_image_size(preprocess)
    steps: list = [T.RandomResizedCrop(size, scale=(cfg.min_scale, 1.0), ratio=(0.8, 1.25), interpolation=T.InterpolationMode.BICUBIC)]
    if cfg.flip:
        steps.append(T.RandomHorizontalFlip())
    if cfg.style:
        steps += style_steps()
    else:
        steps.append(T.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue))
    steps += [T.ToTensor(), find_normalize(preprocess)]
    return T.Compose(steps)


def parse_templates(spec: str | None) -> tuple[str, ...]:
    """'a picture of {}|an emoji of {}' -> templates; every template must hold one '{}' (the caption goes there)."""
    if spec is None:
        return DEFAULT_TEMPLATES
    templates = tuple(t.strip() for t in spec.split("|") if t.strip())
    for t in templates:
        if t.count("{}") != 1:
            raise ConfigError(f"template {t!r} must contain exactly one {{}} (where the caption goes)")
    return templates


def templated_texts(subject: str, templates: Sequence[str]) -> list[str]:
    """The subject (an example's primary caption) put into every template, e.g. 'an emoji of {}'."""
    return list(dict.fromkeys(t.format(subject) for t in templates))


def pick_text(primary: int, alternatives: Sequence[int], templated: Sequence[int], template_prob: float, rng) -> int:
    """One text for a training step: a templated caption (``template_prob``), else the primary caption
    half the time, else any caption - so the primary caption dominates but alternatives are seen too."""
    if templated and rng.random() < template_prob:
        return templated[int(rng.integers(len(templated)))]
    if not alternatives or rng.random() < 0.5:
        return primary
    return alternatives[int(rng.integers(len(alternatives)))]


def seeded_view(transform: Callable, image: Image.Image, seed: int) -> torch.Tensor:
    """One reproducible random view: the same (image, seed) gives the same crop/jitter on every run."""
    state = torch.random.get_rng_state()
    py_state = random.getstate()
    try:
        torch.manual_seed(seed)
        random.seed(seed)
        return transform(image)
    finally:
        torch.random.set_rng_state(state)
        random.setstate(py_state)
