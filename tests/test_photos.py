"""Photo libraries (issue 14, items 1-3): phone and camera formats index and search end to end, EXIF/XMP
become typed fields with offline place names, and searches filter, sort and find by them."""

from __future__ import annotations

import io
import json
import os
import shutil
from fractions import Fraction
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from conftest import run_index
from dngfile import write_dng
from photo_library import COUNTRY, add_other_formats, build_library
from photofiles import LISBON, SYDNEY, Shot, heic_bytes, iptc_jpeg_bytes, write_heic, write_jpeg, xmp_packet
from mmsearch.errors import InvalidQueryError
from mmsearch.geo import bounding_box, haversine_km
from mmsearch.imaging.decode import open_image
from mmsearch.imaging.photometa import camera_fields, iso_datetime, parse_xmp, photo_fields
from mmsearch.imaging.places import place_names
from mmsearch.imaging.raw import read_raw
from mmsearch.storage.filters import from_json, near, parse_near


# --- reading: fields, places, RAW ---
def test_jpeg_exif_gps_and_xmp_become_typed_fields(tmp_path):
    (tmp_path / "Summer").mkdir()
    path = write_jpeg(tmp_path / "Summer" / "p.jpg", Shot(
        make="Google", model="Pixel 7", taken="2023:06:01 14:05:09", offset="+01:00", gps=(-33.8688, 151.2093), altitude=-3.5,
        lens="Pixel 7 back camera", iso=50, exposure=Fraction(1, 250), focal_length=6.81, orientation=6,
        tags=["beach", "sunset"], title="Evening"))
    with Image.open(path) as im:
        fields = photo_fields(im, path)
    assert fields["taken"] == "2023-06-01T14:05:09+01:00" and fields["taken_source"] == "exif"
    assert (fields["camera"], fields["camera_make"], fields["camera_model"]) == ("Google Pixel 7", "Google", "Pixel 7")
    assert fields["lens"] == "Pixel 7 back camera" and fields["iso"] == 50 and fields["exposure"] == 0.004
    assert fields["focal_length"] == 6.81
    assert fields["gps_lat"] == pytest.approx(-33.8688, abs=1e-5) and fields["gps_lon"] == pytest.approx(151.2093, abs=1e-5)
    assert fields["gps_alt"] == -3.5  # below sea level
    assert (fields["width"], fields["height"]) == (64, 96)  # stored 96x64, shown turned a quarter
    assert fields["tags"] == ["beach", "sunset"] and fields["title"] == "Evening"
    assert fields["album"] == "Summer"


def test_a_picture_without_exif_gets_size_album_and_its_mtime(tmp_path):
    path = tmp_path / "plain.png"
    Image.new("RGB", (30, 20)).save(path)
    os.utime(path, (1_600_000_000, 1_600_000_000))
    with Image.open(path) as im:
        fields = photo_fields(im, path)
    assert fields["taken_source"] == "mtime" and fields["taken"].startswith("2020-09-1")
    assert (fields["width"], fields["height"], fields["album"]) == (30, 20, tmp_path.name)
    assert not {"camera", "gps_lat", "city"} & set(fields)


def test_reading_fields_never_decodes_pixels(tmp_path):
    """A PNG declaring 100,000 x 100,000 pixels: its fields are read, its pixels are not (the cap refuses them)."""
    from badfiles import _png_with_size

    import resource

    path = tmp_path / "bomb.png"
    path.write_bytes(_png_with_size(100_000, 100_000))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with Image.open(path) as im:
        fields = photo_fields(im, path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 100_000  # KB: nothing decoded (it would be 30 GB)
    assert (fields["width"], fields["height"]) == (100_000, 100_000)


@pytest.mark.parametrize("make, model, camera, camera_model", [
    ("NIKON CORPORATION", "NIKON D850", "Nikon D850", "D850"),
    ("Canon", "Canon EOS R5", "Canon EOS R5", "EOS R5"),
    ("OLYMPUS IMAGING CORP.", "E-M10MarkII", "Olympus E-M10MarkII", "E-M10MarkII"),
    ("samsung", "SM-G991B", "Samsung SM-G991B", "SM-G991B"),
    ("  Apple ", "iPhone 13 ", "Apple iPhone 13", "iPhone 13"),
    (None, "Pixel 7", "Pixel 7", "Pixel 7"),
])
def test_camera_names_are_normalised(make, model, camera, camera_model):
    fields = camera_fields(make, model)
    assert fields["camera"] == camera and fields["camera_model"] == camera_model


@pytest.mark.parametrize("value, offset, expected", [
    ("2023:06:01 14:05:09", "+01:00", "2023-06-01T14:05:09+01:00"),
    ("2023:06:01 14:05:09", "-03:30", "2023-06-01T14:05:09-03:30"),
    ("2023:06:01 14:05:09", None, "2023-06-01T14:05:09"),
    ("2023:06:01 14:05:09", "+99:00", "2023-06-01T14:05:09"),  # an impossible offset is dropped, not guessed
    ("0000:00:00 00:00:00", None, None),  # a camera clock never set
    ("2023:02:30 10:00:00", None, None),
    ("    :  :     :  :  ", None, None),
])
def test_capture_times(value, offset, expected):
    assert iso_datetime(value, offset) == expected


def test_xmp_keywords_titles_and_hostile_packets():
    parsed = parse_xmp(xmp_packet(["tram", "Alfama"], "Up the hill", hierarchical=["Places|Portugal|Lisbon"]))
    assert parsed == {"title": "Up the hill", "tags": ["tram", "Alfama", "Lisbon"]}
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><x:xmpmeta xmlns:x="adobe:ns:meta/">&b;</x:xmpmeta>'
    assert parse_xmp(bomb) == {}
    assert parse_xmp(b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><unclosed></x:xmpmeta>") == {}
    assert parse_xmp(b"<x:xmpmeta>" + b" " * (300 * 1024) + b"</x:xmpmeta>") == {}


def test_iptc_keywords_and_title(tmp_path):
    path = tmp_path / "old.jpg"
    path.write_bytes(iptc_jpeg_bytes(["harbour", "boats"], "Morning"))
    with Image.open(path) as im:
        fields = photo_fields(im, path)
    assert fields["tags"] == ["harbour", "boats"] and fields["title"] == "Morning"


def test_place_names_are_offline_and_sensible():
    lisbon, sintra, sydney, sea = place_names([LISBON, (38.8, -9.38), SYDNEY, (0.0, -30.0)])
    assert lisbon == {"city": "Lisbon", "region": "Lisbon", "country": "Portugal"}  # not a district of it
    assert sintra["city"] == "Sintra" and sintra["country"] == "Portugal"  # a town is not swallowed by the city
    assert sydney["city"] == "Sydney" and sydney["country"] == "Australia"
    assert sea == {}  # mid-Atlantic: nowhere


def test_raw_uses_the_preview_when_large_enough_else_demosaics(tmp_path):
    previewed = write_dng(tmp_path / "a.dng", 600, 400, preview=(300, 200))
    picture, facts = read_raw(previewed, 90_000_000, target_size=160)
    assert facts.source == "preview" and picture.size == (300, 200)
    assert picture.getpixel((150, 20))[0] > 150 and picture.getpixel((150, 180))[2] > 150  # red top, blue bottom
    picture, facts = read_raw(previewed, 90_000_000, target_size=256)  # preview too small: sensor data
    assert facts.source == "demosaic" and picture.size == (300, 200) and facts.iso == 200
    assert picture.getpixel((150, 20))[0] > picture.getpixel((150, 20))[2]
    with pytest.raises(Exception, match="above the cap"):
        read_raw(previewed, 10_000, target_size=256)


def test_raw_files_get_their_camera_and_time(tmp_path):
    meta: dict = {}
    image = open_image(str(write_dng(tmp_path / "x.nef.dng", make="NIKON CORPORATION", model="NIKON Z 6")), target_size=32, meta=meta)
    assert image.size == (32, 24)
    assert meta["camera"] == "Nikon Z 6" and meta["taken"] == "2024-05-17T09:30:00" and meta["exposure"] == 0.004


# --- filters: parsing and geometry ---
def test_near_validation_and_parsing():
    assert parse_near("38.71, -9.14", 5).value == (38.71, -9.14, 5.0)
    assert from_json({"near": {"lat": 38.71, "lon": -9.14, "km": 2}}) == [near(38.71, -9.14, 2)]
    for bad in ("38.71", "north,south", "91,0"):
        with pytest.raises(InvalidQueryError):
            parse_near(bad, 5)
    for spec in ({"lat": 1, "lon": 2}, {"lat": 1, "lon": 2, "km": 0}, {"lat": 1, "lon": 2, "km": True}, [1, 2, 3]):
        with pytest.raises(InvalidQueryError):
            from_json({"near": spec})


@pytest.mark.parametrize("lat, lon, km", [(38.7, -9.1, 5), (0, 179.99, 50), (0, -179.99, 50), (89.9, 0, 30), (-60, 20, 3000)])
def test_bounding_box_holds_the_whole_circle(lat, lon, km):
    low, high, lons = bounding_box(lat, lon, km)
    for bearing in range(0, 360, 5):  # points on the circle itself, computed the other way round
        import math

        d, b, p1, l1 = km / 6371.0088, math.radians(bearing), math.radians(lat), math.radians(lon)
        p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(b))
        l2 = l1 + math.atan2(math.sin(b) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2))
        plat, plon = math.degrees(p2), (math.degrees(l2) + 540) % 360 - 180
        assert low - 1e-9 <= plat <= high + 1e-9
        assert lons is None or any(w - 1e-9 <= plon <= e + 1e-9 for w, e in lons)
        assert haversine_km(lat, lon, plat, plon) == pytest.approx(km, rel=1e-6)


# --- the library, indexed ---
@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_encoder):
    from mmsearch.api import create_app
    from mmsearch.config import Settings
    from mmsearch.search import Searcher

    root = tmp_path_factory.mktemp("library")
    photos = build_library(root / "photos")
    formats = add_other_formats(root / "photos")
    report = run_index(root / "photos", root / "idx", tiny_encoder)
    searcher = Searcher(root / "idx", tiny_encoder)
    with TestClient(create_app(Settings(index_dir=root / "idx"), searcher=searcher)) as client:
        yield root, photos, formats, report, searcher, client


def records(searcher) -> dict[str, object]:
    return {Path(r.key).name: r for r in searcher.store.all_items()}


def query(client, **body) -> dict:
    r = client.post("/v1/query", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_every_format_is_indexed_with_its_fields(library):
    _, photos, formats, report, searcher, _ = library
    assert report.failures == []
    stored = records(searcher)
    assert len(stored) == len(photos) + len(formats)
    for photo in photos:
        meta = stored[photo.path.name].meta
        assert meta["taken"] == photo.taken and meta["taken_source"] == "exif", photo.path.name
        assert meta.get("camera") == photo.camera
        assert meta.get("city") == photo.city and meta.get("country") == COUNTRY.get(photo.city)
        assert meta["album"] == (photo.city or "misc")
    assert stored["camera.dng"].meta["camera"] == "Nikon Z 6"
    assert stored["plain.png"].meta["taken_source"] == "mtime"
    for name in ("anim.gif", "anim.webp", "pages.tiff", "sensor.dng"):
        assert stored[name].meta["width"] in (40, 64)


def test_each_format_is_found_by_its_own_picture(library):
    """Search by image: each file's picture, decoded as a query, finds that file first."""
    _, photos, formats, _, searcher, client = library
    samples = [p.path for p in photos[:4]] + [formats[k] for k in ("gif", "webp", "tiff", "dng_preview")]
    for path in samples:
        with open(path, "rb") as fh:
            data = fh.read()
        if path.suffix == ".dng":  # uploads never take RAW: search with the picture the index decoded
            buf = io.BytesIO()
            open_image(str(path), target_size=64).save(buf, format="PNG")
            data = buf.getvalue()
        r = client.post("/v1/search/image", files={"file": (path.name, data)}, data={"k": "3"})
        assert r.status_code == 200, r.text
        assert Path(r.json()["hits"][0]["path"]).name == path.name


def test_heic_upload_is_accepted_and_raw_upload_is_refused(library, tmp_path):
    _, _, formats, _, _, client = library
    r = client.post("/v1/search/image", files={"file": ("phone.heic", heic_bytes())}, data={"k": "2"})
    assert r.status_code == 200, r.text
    r = client.post("/v1/search/image", files={"file": ("raw.dng", formats["dng"].read_bytes())})
    assert r.status_code == 422 and "not a readable image" in r.json()["error"]


def test_lisbon_in_keyword_mode_finds_the_photos_taken_there(library):
    _, photos, _, _, searcher, client = library
    in_lisbon = {p.path.name for p in photos if p.city == "Lisbon"}
    hits = query(client, text="Lisbon", mode="keyword", target="image", limit=100)["hits"]
    assert {Path(h["path"]).name for h in hits} == in_lisbon  # album "Lisbon" and city "Lisbon": the same photos


def test_keyword_mode_finds_cameras_countries_and_xmp_tags(library):
    _, photos, _, _, _, client = library

    def found(text):
        return {Path(h["path"]).name for h in query(client, text=text, mode="keyword", target="image", limit=100)["hits"]}

    assert found("Nikon") == {p.path.name for p in photos if p.camera == "Nikon D850"} | {"camera.dng"}
    assert found("Australia") == {p.path.name for p in photos if p.city == "Sydney"}
    tagged = {p.path.name for i, p in enumerate(photos) if i % 3 == 0}
    assert found("holiday") == tagged
    hybrid = query(client, text="roll1", mode="hybrid", target="image", limit=3)["hits"]
    assert Path(hybrid[0]["path"]).name in tagged


def test_sort_by_capture_time_both_ways(library):
    _, photos, _, _, _, client = library
    filt = {"taken_source": "exif"}
    up = query(client, text="photo", filter=filt, sort="taken", limit=100)["hits"]
    down = query(client, text="photo", filter=filt, sort="-taken", limit=100)["hits"]
    times = [h["metadata"]["taken"] for h in up]
    assert times == sorted(times) and len(times) == len(photos) + 2  # the two DNGs carry a capture time too
    assert [h["metadata"]["taken"] for h in down] == sorted(times, reverse=True)


def test_fields_list_a_date_histogram_and_photo_facets(library):
    _, photos, _, _, _, client = library
    fields = {f["name"]: f for f in client.get("/v1/fields").json()["fields"]}
    histogram = fields["taken"]["histogram"]
    exif_months = {p.taken[:7] for p in photos}
    assert exif_months <= {b["bucket"] for b in histogram}
    assert sum(b["count"] for b in histogram) == fields["taken"]["count"]
    assert {v["value"] for v in fields["country"]["values"]} == {"Portugal", "United States", "Australia"}
    assert {v["value"] for v in fields["camera"]["values"]} >= {"Google Pixel 7", "Nikon D850", "Canon EOS R5"}
    assert fields["camera"]["histogram"] is None


# --- filters on time, camera and place never leak and fill k ---
def photo_holds(meta: dict, field: str, op: str, value) -> bool:
    """The documented semantics, in Python, to check the SQL against."""
    if field == "near":
        lat, lon = meta.get("gps_lat"), meta.get("gps_lon")
        return lat is not None and haversine_km(value["lat"], value["lon"], lat, lon) <= value["km"]
    if field == "camera" and op in ("eq", "in"):
        wanted = value if op == "in" else [value]
        return meta.get("camera") in wanted or meta.get("camera_model") in wanted
    v = meta.get(field)
    if op == "in":
        return v in value
    if op == "eq":
        return isinstance(v, str) and (v == value or (len(value) == 10 and v.startswith(value)))
    if not isinstance(v, str):
        return False
    day = len(value) == 10
    return {"gte": v >= value, "lt": v < value, "lte": v <= value + ("\uffff" if day else ""),
            "gt": v > value + ("\uffff" if day else "")}[op]


days = st.builds(lambda y, m, d: f"{y}-{m:02d}-{d:02d}", st.integers(2020, 2024), st.integers(1, 12), st.integers(1, 28))
photo_conditions = st.one_of(
    st.builds(lambda v: ("taken", {"gte": v}), days),
    st.builds(lambda v: ("taken", {"lte": v}), days),
    st.builds(lambda v: ("taken", {"gt": v}), days),
    st.builds(lambda a, b: ("taken", {"gte": min(a, b), "lt": max(a, b)}), days, days),
    st.builds(lambda v: ("camera", {"eq": v}), st.sampled_from(["Pixel 7", "Google Pixel 7", "D850", "Nikon D850", "EOS R5", "Leica"])),
    st.builds(lambda v: ("camera", {"in": v}), st.lists(st.sampled_from(["iPhone 13", "Canon EOS R5", "Pixel 7"]), min_size=1, max_size=2, unique=True)),
    st.builds(lambda v: ("country", {"eq": v}), st.sampled_from(["Portugal", "Australia", "United States", "Spain"])),
    st.builds(lambda v: ("city", {"in": v}), st.lists(st.sampled_from(["Lisbon", "Porto", "Sydney"]), min_size=1, max_size=2, unique=True)),
    st.builds(lambda place, km: ("near", {"lat": place[0], "lon": place[1], "km": km}),
              st.sampled_from([LISBON, SYDNEY, (41.15, -8.61), (37.78, -122.42), (0.0, 0.0)]), st.sampled_from([0.5, 2, 5, 400, 20000])),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(picked=st.lists(photo_conditions, min_size=1, max_size=3, unique_by=lambda c: c[0]), k=st.integers(1, 20),
       mode=st.sampled_from(["vector", "hybrid", "keyword"]))
def test_photo_filters_never_leak_and_fill_k(library, picked, k, mode):
    _, _, _, _, searcher, client = library
    filt = dict(picked)
    expected = {r.id for r in searcher.store.all_items()
                if all(photo_holds(r.meta, f, op, v) for f, cond in filt.items()
                       for op, v in ([("near", cond)] if f == "near" else cond.items()))}
    text = "photo" if mode != "keyword" else "holiday roll0 roll1 roll2 roll3 Frame Portugal Australia States misc formats"
    got = [h["id"] for h in query(client, text=text, filter=filt, limit=k, target="image", mode=mode)["hits"]]
    assert set(got) <= expected, f"leaked {set(got) - expected} for {filt}"
    if mode != "keyword":  # keyword mode returns only items matching a word
        assert len(got) == min(k, len(expected))


def test_cli_where_near_and_sort(library, monkeypatch):
    from mmsearch.cli import main

    root, photos, _, _, _, _ = library
    monkeypatch.setenv("MMSEARCH_INDEX_DIR", str(root / "idx"))
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(main, ["search", "photo", "--json", "-k", "50", *args])
        assert result.exit_code == 0, result.output
        return [h["metadata"] for h in json.loads(result.output.strip().splitlines()[-1])["hits"]]

    june = run("--where", "taken >= 2022-06-01", "--where", "taken <= 2022-06-30")
    assert june and all("2022-06-01" <= m["taken"][:10] <= "2022-06-30" for m in june)
    assert {m["camera"] for m in run("--where", "camera = 'Pixel 7'")} == {"Google Pixel 7"}
    assert {m["city"] for m in run("--where", "country = Portugal")} == {"Lisbon", "Porto"}
    close = run("--near", "38.7107,-9.1386", "--within-km", "5")
    assert close and {m["city"] for m in close} == {"Lisbon"}
    down = [m["taken"] for m in run("--where", "taken_source = exif", "--sort", "-taken")]
    assert down == sorted(down, reverse=True)
    bad = runner.invoke(main, ["search", "photo", "--within-km", "3"])
    assert bad.exit_code != 0 and "--within-km needs --near" in bad.output


# --- incremental runs keep the fields ---
def test_unchanged_moved_and_old_items_keep_or_gain_their_fields(tmp_path, tiny_encoder):
    from mmsearch.storage.indexdir import IndexDir

    src = tmp_path / "photos"
    (src / "Trip").mkdir(parents=True)
    write_jpeg(src / "Trip" / "a.jpg", Shot(make="Google", model="Pixel 7", taken="2023:06:01 14:05:09", gps=LISBON, tags=["tram"]))
    write_heic(src / "Trip" / "b.heic", Shot(make="Apple", model="iPhone 13", taken="2022:01:02 03:04:05"))
    idx = tmp_path / "idx"
    run_index(src, idx, tiny_encoder)

    def metas():
        store = IndexDir(idx).open_store()
        try:
            return {Path(r.key).name: (r.id, r.meta) for r in store.all_items()}
        finally:
            store.close()

    first = metas()
    again = run_index(src, idx, False)  # nothing to embed, no model loaded
    assert (again.unchanged, again.updated) == (2, 0) and metas() == first

    (src / "Lisbon").mkdir()
    shutil.move(src / "Trip" / "a.jpg", src / "Lisbon" / "a.jpg")
    moved = run_index(src, idx, False)
    assert moved.moved == 1
    after = metas()
    assert after["a.jpg"][0] == first["a.jpg"][0]  # same item, same vector
    assert after["a.jpg"][1] == {**first["a.jpg"][1], "album": "Lisbon"}

    store = IndexDir(idx).open_store()  # an index built before photo fields: items without them
    try:
        store.update_items([(item_id, {"meta": {}}) for item_id, _ in after.values()])
    finally:
        store.close()
    backfilled = run_index(src, idx, False)
    assert backfilled.updated == 2 and backfilled.added == backfilled.reembedded == 0
    assert metas() == after
