"""Build a demo product catalogue for the e-commerce use case: products.csv + one image per product.

    python data/catalogue/build_catalogue.py [--out data/build/catalogue] [--cache DIR] [--seed 7]

Product photos are stood in for by emoji art (the emoji recipe's packages, fetched by name): every
product concept below is drawn in several art styles, and each drawing becomes one product with its
own generated SKU, brand, title, description and price. Everything is derived from the seed, so the
catalogue is identical on every run. Columns: sku,title,description,category,brand,price,currency,image
(image relative to the CSV).
"""
from __future__ import annotations

import argparse
import csv
import logging
import random
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "recipes"))

from emoji_sources import STYLE_SPECS, EmojiEntry, EmojiStyle, build_catalogue  # noqa: E402
from fetch import FetchError, fetch_package  # noqa: E402
from raster import RasterError, normalize, save_png  # noqa: E402
from textclean import caption_key  # noqa: E402

log = logging.getLogger("build_catalogue")

STYLES = ("twemoji", "noto", "fluent-flat", "openmoji")
CURRENCY = "EUR"
IMAGE_SIZE = 256

# category -> (price range in EUR, emoji labels of the things sold in it)
CATEGORIES: dict[str, tuple[tuple[float, float], list[str]]] = {
    "Clothing": ((9.0, 129.0), ["t-shirt", "jeans", "dress", "coat", "scarf", "gloves", "socks", "necktie", "kimono",
                                "bikini", "briefs", "shorts", "one-piece swimsuit", "lab coat", "safety vest", "sari"]),
    "Hats & Accessories": ((5.0, 249.0), ["billed cap", "top hat", "woman’s hat", "graduation cap", "glasses",
                                          "sunglasses", "goggles", "ring", "watch"]),
    "Bags": ((15.0, 299.0), ["backpack", "handbag", "purse", "clutch bag", "shopping bags", "briefcase", "luggage"]),
    "Shoes": ((19.0, 189.0), ["running shoe", "high-heeled shoe", "woman’s sandal", "woman’s boot", "hiking boot",
                              "flat shoe", "man’s shoe", "ballet shoes", "thong sandal", "ice skate", "roller skate"]),
    "Food & Drink": ((0.5, 24.0), ["red apple", "banana", "grapes", "strawberry", "carrot", "bread", "cheese wedge",
                                   "croissant", "baguette bread", "honey pot", "chocolate bar", "doughnut", "cookie",
                                   "birthday cake", "hot beverage", "bottle with popping cork", "tomato", "avocado",
                                   "pineapple", "cherries", "lemon", "coconut", "kiwi fruit", "popcorn"]),
    "Electronics": ((9.0, 1499.0), ["mobile phone", "laptop", "desktop computer", "printer", "keyboard",
                                    "computer mouse", "camera", "video camera", "television", "radio", "headphone",
                                    "joystick", "video game", "battery", "light bulb", "flashlight", "telephone",
                                    "studio microphone", "electric plug"]),
    "Toys & Sports": ((3.0, 149.0), ["teddy bear", "kite", "yo-yo", "puzzle piece", "nesting dolls", "piñata",
                                     "flying disc", "game die", "chess pawn", "magic wand", "balloon", "soccer ball",
                                     "basketball", "tennis", "volleyball", "robot", "skateboard", "kick scooter",
                                     "bicycle"]),
}

BRANDS = ["Northwind", "Acme", "Bluebird", "Kestrel & Co", "Lumen", "Oakridge", "Pioneer", "Solstice",
          "Tandem", "Verdant", "Zephyr", "Maple Lane"]
ADJECTIVES = {
    "Clothing": ["Classic", "Organic cotton", "Slim-fit", "Relaxed", "Everyday", "Premium"],
    "Hats & Accessories": ["Classic", "Lightweight", "Handmade", "Vintage", "Everyday", "Premium"],
    "Bags": ["Leather", "Waterproof", "Compact", "Travel", "Canvas", "Everyday"],
    "Shoes": ["Comfort", "Lightweight", "Leather", "All-weather", "Classic", "Sport"],
    "Food & Drink": ["Organic", "Fresh", "Farm", "Artisan", "Family-size", "Fair-trade"],
    "Electronics": ["Wireless", "Compact", "Pro", "Smart", "Portable", "Energy-saving"],
    "Toys & Sports": ["Kids'", "Classic", "Deluxe", "Outdoor", "Wooden", "Junior"],
}
PITCHES = [
    "Built to last and easy to care for.",
    "A customer favourite, now in a new edition.",
    "Great value for everyday use.",
    "Thoughtfully designed with sustainable materials.",
    "Makes a perfect gift.",
    "Ships within two working days.",
]


class CatalogueError(RuntimeError):
    """The packages do not provide what the catalogue needs."""


@dataclass(frozen=True)
class Product:
    sku: str
    title: str
    description: str
    category: str
    brand: str
    price: str
    currency: str
    image: str


def _product_noun(label: str) -> str:
    noun = label.replace("’", "'")
    return noun[:1].upper() + noun[1:]


def _describe(rng: random.Random, entry: EmojiEntry, category: str, adjective: str, brand: str) -> str:
    tags = [t for t in entry.texts if len(t) > 2 and " " not in t][:4]
    features = f" Keywords: {', '.join(tags)}." if tags else ""
    return f"{adjective} {entry.text.replace('’', chr(39))} by {brand}, from our {category.lower()} range.{features} {rng.choice(PITCHES)}"


def _price(rng: random.Random, low: float, high: float) -> str:
    # log-uniform, then shop-style endings (.99 / .49 / .95)
    value = low * (high / low) ** rng.random()
    return f"{max(int(value), 0) + rng.choice([0.99, 0.49, 0.95]):.2f}"


def _load(opts_cache: Path) -> tuple[dict[str, EmojiEntry], list[EmojiStyle]]:
    emojibase = fetch_package("npm", "emojibase-data", opts_cache)
    entries = build_catalogue(emojibase.root, None, None)
    styles = []
    for name in STYLES:
        registry, package, license_id, find_images = STYLE_SPECS[name]
        try:
            pkg = fetch_package(registry, package, opts_cache)
        except FetchError as exc:
            log.warning("style %s unavailable: %s", name, exc)
            continue
        styles.append(EmojiStyle(name, pkg, license_id, find_images(pkg.root)))
    if not styles:
        raise CatalogueError("no emoji style could be fetched")
    return entries, styles


def build(out: Path, cache: Path, seed: int) -> list[Product]:
    """Render the product images and write products.csv; returns the products."""
    entries, styles = _load(cache)
    by_label = {caption_key(e.text): e for e in entries.values() if e.hexcode == e.concept}
    rng = random.Random(seed)
    products: list[Product] = []
    for category, ((low, high), labels) in CATEGORIES.items():
        for label in labels:
            entry = by_label.get(caption_key(label))
            if entry is None:
                log.warning("no emoji labelled %r; skipped", label)
                continue
            # distinct brand and adjective for each drawing of the same thing, so titles differ
            brands = rng.sample(BRANDS, len(styles))
            adjectives = rng.sample(ADJECTIVES[category], len(styles))
            for style, brand, adjective in zip(styles, brands, adjectives):
                image = style.images.get(entry.hexcode)
                if image is None:
                    continue
                try:
                    img = normalize(image.load(2 * IMAGE_SIZE), IMAGE_SIZE)
                except RasterError as exc:
                    log.warning("cannot render %s/%s: %s", style.name, label, exc)
                    continue
                if img is None:
                    continue
                sku = f"{category[:3].upper()}-{len(products) + 1:05d}"
                rel = Path("images") / f"{sku}.png"
                save_png(img, out / rel)
                products.append(
                    Product(
                        sku=sku,
                        title=f"{brand} {adjective} {_product_noun(entry.text)}",
                        description=_describe(rng, entry, category, adjective, brand),
                        category=category,
                        brand=brand,
                        price=_price(rng, low, high),
                        currency=CURRENCY,
                        image=rel.as_posix(),
                    )
                )
    _write_csv(out / "products.csv", products)
    _write_notice(out, styles)
    return products


def _write_csv(path: Path, products: list[Product]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sku", "title", "description", "category", "brand", "price", "currency", "image"])
        for p in products:
            writer.writerow([p.sku, p.title, p.description, p.category, p.brand, p.price, p.currency, p.image])


def _write_notice(out: Path, styles: list[EmojiStyle]) -> None:
    lines = ["Demo catalogue: brands, titles, descriptions and prices are invented (seeded generator).",
             "Product images are emoji art, rendered from these packages:"]
    lines += [f"- {s.name}: {s.package.source} ({s.license})" for s in styles]
    (out / "NOTICE").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=HERE.parent / "build" / "catalogue")
    p.add_argument("--cache", type=Path, default=None, help="package cache (default OUT/../cache)")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    out = args.out.resolve()
    try:
        products = build(out, (args.cache or out.parent / "cache").resolve(), args.seed)
    except (CatalogueError, FetchError, OSError) as exc:
        log.error("%s", exc)
        return 1
    log.info("wrote %d products to %s", len(products), out / "products.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
