"""Distances on the Earth, one formula for everyone: place-name lookup (mmsearch.imaging.places), the
radius filter's SQL (SQLite calls this function; PostgreSQL's SQL spells the same formula out), tests."""

from __future__ import annotations

import math

EARTH_RADIUS_KM = 6371.0088  # mean radius (IUGG)
KM_PER_DEGREE = math.pi * EARTH_RADIUS_KM / 180  # along a meridian


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km between two (lat, lon) positions in degrees."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def bounding_box(lat: float, lon: float, km: float) -> tuple[float, float, list[tuple[float, float]] | None]:
    """A box holding every point within ``km`` of (lat, lon): -> (min lat, max lat, longitude ranges),
    the ranges None when every longitude may qualify (the circle reaches a pole or spans the globe) and
    two ranges when the box crosses the antimeridian. Cheap to test in SQL before the exact distance."""
    dlat = km / KM_PER_DEGREE
    low, high = lat - dlat, lat + dlat
    if low <= -90 or high >= 90:
        return max(low, -90.0), min(high, 90.0), None
    widest = max(abs(low), abs(high))  # longitude degrees are shortest at the box's pole-ward edge
    dlon = dlat / math.cos(math.radians(widest))
    if dlon >= 180:
        return low, high, None
    west, east = lon - dlon, lon + dlon
    if west < -180:
        return low, high, [(west + 360, 180.0), (-180.0, east)]
    if east > 180:
        return low, high, [(west, 180.0), (-180.0, east - 360)]
    return low, high, [(west, east)]
