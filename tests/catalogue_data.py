"""A synthetic product catalogue generated on the fly (no files shipped): products with typed fields,
one to three images each (distinct pictures), written as CSV or JSONL."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from conftest import pattern_image

COLOURS = ["red", "blue", "green", "black", "white", "brown"]
MATERIALS = ["leather", "canvas", "wool", "cotton", "suede"]
KINDS = {"bags": "handbag", "shoes": "sneaker", "hats": "beanie", "scarves": "scarf"}
BRANDS = ["Acme", "Borealis", "Corvid", "Dunmore"]
COLUMNS = ["sku", "title", "description", "category", "brand", "price", "currency", "released", "stock", "image", "image2", "images"]


def make_products(n: int, seed: int = 7) -> list[dict]:
    """Deterministic product rows: sku SKU-0000.., prices 5..150 with cents, ISO release dates."""
    rng = random.Random(seed)
    products = []
    for i in range(n):
        category = rng.choice(sorted(KINDS))
        colour, material, brand = rng.choice(COLOURS), rng.choice(MATERIALS), rng.choice(BRANDS)
        title = f"{colour.title()} {material} {KINDS[category]}"
        products.append({
            "sku": f"SKU-{i:04d}",
            "title": title,
            "description": f"A {colour} {material} {KINDS[category]} by {brand}, model {rng.randint(100, 999)}.",
            "category": category,
            "brand": brand,
            "price": round(rng.uniform(5, 150), 2) if i % 5 else rng.randint(5, 150),
            "currency": "EUR",
            "released": f"20{rng.randint(20, 25)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            "stock": rng.randint(0, 40),
            "n_images": 1 + i % 3,
        })
    return products


def write_images(root: Path, products: list[dict]) -> None:
    (root / "img").mkdir(parents=True, exist_ok=True)
    for p_index, product in enumerate(products):
        refs = []
        for n in range(product["n_images"]):
            ref = f"img/{product['sku']}_{n}.png"
            if not (root / ref).exists():
                pattern_image(1000 + p_index * 3 + n, size=(48, 40)).save(root / ref)
            refs.append(ref)
        product["refs"] = refs


def write_catalogue(root: Path, products: list[dict], fmt: str = "csv") -> Path:
    """Write the catalogue (images first). CSV uses image/image2 columns plus an ``images`` list
    column; JSONL uses an ``images`` list, so both spellings of image columns are exercised."""
    root.mkdir(parents=True, exist_ok=True)
    write_images(root, products)
    if fmt == "csv":
        path = root / "products.csv"
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            for p in products:
                refs = p["refs"]
                row = {k: p[k] for k in COLUMNS if k in p}
                row.update(image=refs[0], image2=refs[1] if len(refs) > 1 else "", images="|".join(refs[2:]))
                writer.writerow(row)
        return path
    path = root / "products.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for p in products:
            row = {k: p[k] for k in COLUMNS if k in p}
            row["images"] = p["refs"]
            fh.write(json.dumps(row) + "\n")
    return path


def open_shop(root: Path, encoder, n_products: int):
    """Index a generated catalogue of ``n_products`` under ``root`` with ``encoder``.

    -> (searcher, app, products, catalogue folder): what the API and browser tests both start from."""
    from conftest import run_index
    from mmsearch.api import create_app
    from mmsearch.config import Settings
    from mmsearch.search import Searcher

    products = make_products(n_products)
    path = write_catalogue(root / "catalogue", products)
    run_index(path, root / "idx", encoder)
    searcher = Searcher(root / "idx", encoder)
    return searcher, create_app(Settings(index_dir=root / "idx"), searcher=searcher), products, root / "catalogue"
