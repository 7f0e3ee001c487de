"""Indexing a folder of broken and odd files: no crash, no hang, every good file in, every bad one
reported with a reason, pixels encoded as a viewer shows them, and memory bounded while decoding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from PIL import Image

from badfiles import build_battery
from conftest import REPO, run_index
from mmsearch.storage.indexdir import IndexDir

INDEX_TIMEOUT = 180  # seconds: far above the few seconds a run takes, so only a hang trips it


class SpyEncoder:
    """The tiny model, recording every image exactly as it was handed to the model's preprocessing."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.seen: list[Image.Image] = []

    def __getattr__(self, name):
        return getattr(self._inner, name)

    @property
    def image_transform(self):
        transform = self._inner.image_transform

        def record(image: Image.Image):
            self.seen.append(image.copy())
            return transform(image)

        return record


def index_within_timeout(what: str, run):
    """(run()'s result, seconds) with run() in a thread: a hang fails the test after INDEX_TIMEOUT instead
    of stalling the suite; an error in it is raised here, in the test's own thread."""
    outcome: dict = {}

    def work():
        try:
            started = time.monotonic()
            outcome["result"] = run()
            outcome["seconds"] = time.monotonic() - started
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(INDEX_TIMEOUT)
    assert not worker.is_alive(), f"indexing {what} hung for {INDEX_TIMEOUT}s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"], outcome["seconds"]


@pytest.fixture(scope="module")
def battery(tmp_path_factory):
    return build_battery(tmp_path_factory.mktemp("battery"))


@pytest.fixture(scope="module")
def battery_indexed(battery, tmp_path_factory, tiny_encoder):
    spy = SpyEncoder(tiny_encoder)
    index_dir = tmp_path_factory.mktemp("battery_index")
    report, _ = index_within_timeout("the battery", lambda: run_index(battery.root, index_dir, spy))
    return report, index_dir, spy


def test_battery_has_at_least_twenty_kinds(battery):
    assert len(battery.files) >= 20, [f.name for f in battery.files]
    assert battery.good and battery.bad


def test_every_good_file_is_indexed(battery, battery_indexed):
    report, index_dir, _ = battery_indexed
    store = IndexDir(index_dir).open_store()
    try:
        by_key = {r.key: r for r in store.all_items()}
    finally:
        store.close()
    for expect in battery.good:
        record = by_key.get(str(expect.path))
        assert record is not None, f"{expect.name} was not indexed; failures: {report.failures}"
        assert record.modality == expect.modality, expect.name
    assert len(by_key) == len(battery.good)  # nothing else slipped in


def test_every_bad_file_is_reported_with_a_reason(battery, battery_indexed):
    report, index_dir, _ = battery_indexed
    reasons = dict(report.failures)
    for expect in battery.bad:
        key = next((k for k in reasons if k.endswith(expect.name)), None)
        assert key is not None, f"{expect.name} was not reported; reported: {sorted(reasons)}"
        assert reasons[key].strip(), f"{expect.name} reported without a reason"
        assert expect.reason in reasons[key], (expect.name, reasons[key])
    assert len(report.failures) == len(battery.bad), report.failures
    store = IndexDir(index_dir).open_store()
    try:
        assert len(store.failures()) == len(battery.bad)  # kept for `mmsearch info` too
    finally:
        store.close()


def test_pixels_reach_the_model_as_a_viewer_shows_them(battery, battery_indexed):
    _, _, spy = battery_indexed
    for expect in battery.good:
        if expect.modality != "image":
            continue
        matches = [im for im in spy.seen if im.size in expect.sizes]
        assert matches, f"{expect.name}: no decoded image of size {expect.sizes}; saw {sorted({im.size for im in spy.seen})}"
        assert all(im.mode == "RGB" for im in matches), expect.name
        if expect.check is not None:
            assert any(expect.check(im) for im in matches), f"{expect.name}: decoded pixels are wrong"


def test_exact_duplicates_are_two_items_with_one_vector(battery, battery_indexed):
    _, index_dir, _ = battery_indexed
    store = IndexDir(index_dir).open_store()
    try:
        ids = {r.key.rsplit("/", 1)[-1]: r.id for r in store.all_items()}
        vectors = store.vectors_for([ids["dup_a.png"], ids["dup_b.png"]])
    finally:
        store.close()
    assert ids["dup_a.png"] != ids["dup_b.png"]
    assert np.allclose(vectors[ids["dup_a.png"]], vectors[ids["dup_b.png"]])


def test_odd_texts_are_read_safely(battery, battery_indexed):
    _, index_dir, _ = battery_indexed
    store = IndexDir(index_dir).open_store()
    try:
        texts = {r.key.rsplit("/", 1)[-1]: r.text for r in store.all_items() if r.modality == "text"}
    finally:
        store.close()
    assert texts["latin1.txt"].startswith("Caf\ufffd cr")  # undecodable bytes replaced, file kept
    assert 0 < len(texts["huge.txt"]) <= 256 * 1024  # an 8 MB file is read up to the text cap


def test_reindexing_the_battery_changes_nothing(battery, battery_indexed, tiny_encoder, tmp_path):
    _, index_dir, _ = battery_indexed
    again = run_index(battery.root, index_dir, tiny_encoder)  # bad files are retried, and fail again
    assert again.added == again.reembedded == again.removed == 0
    assert again.unchanged == len(battery.good)
    assert len(again.failures) == len(battery.bad)


@pytest.mark.slow
def test_cli_indexes_the_battery_with_decode_workers(battery, tmp_path):
    """The real command, decoding in a worker process, under a hard timeout: exits 0, reports each bad file."""
    index_dir = tmp_path / "index"
    proc = subprocess.run(
        [sys.executable, "-m", "mmsearch", "index", str(battery.root), "--index-dir", str(index_dir),
         "--model", "mmsearch-tiny-random", "--workers", "1", "--batch-size", "4"],
        cwd=REPO, capture_output=True, text=True, timeout=INDEX_TIMEOUT, env={**os.environ, "MMSEARCH_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{len(battery.bad)} failed" in proc.stdout
    skipped = [line for line in proc.stderr.splitlines() if line.strip().startswith("skipped ")]
    assert len(skipped) == len(battery.bad), proc.stderr
    assert "Traceback" not in proc.stderr


def test_pixel_cap_setting_is_honoured(tmp_path, monkeypatch, tiny_encoder):
    from mmsearch.config import Settings

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (1200, 1000), "teal").save(folder / "big.png")
    Image.new("RGB", (100, 100), "teal").save(folder / "small.png")
    monkeypatch.setenv("MMSEARCH_MAX_IMAGE_PIXELS", "1000000")
    report = run_index(folder, tmp_path / "index", tiny_encoder, max_pixels=Settings().max_image_pixels)
    assert report.added == 1
    assert report.failures == [(str(folder / "big.png"), "image is 1200x1000 = 1,200,000 pixels, above the cap of 1,000,000")]


DECODE_RSS = textwrap.dedent(
    """
    import json, sys
    from mmsearch.imaging.decode import open_image
    from indexer.pipeline import DRAFT_SIZE

    def peak_kb():  # VmHWM: this process's peak RSS (unlike ru_maxrss, not inherited across exec)
        with open("/proc/self/status") as fh:
            return int(next(line for line in fh if line.startswith("VmHWM")).split()[1])

    path, cap, draft = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "draft"
    before = peak_kb()
    image = open_image(path, cap, target_size=DRAFT_SIZE if draft else None)
    print(json.dumps({"before_kb": before, "after_kb": peak_kb(), "size": image.size}))
    """
)


def _decode_peak_growth_mb(path, cap: int, draft: bool) -> tuple[float, tuple[int, int]]:
    proc = subprocess.run([sys.executable, "-c", DECODE_RSS, str(path), str(cap), "draft" if draft else "full"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    return (facts["after_kb"] - facts["before_kb"]) / 1024, tuple(facts["size"])


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="peak RSS is read from /proc")
def test_decoding_a_12000px_photo_keeps_memory_bounded(battery, record_property):
    """A 12000x12000 JPEG (432 MB as RGB) is decoded at reduced scale: the decode's peak RSS stays small.
    The same file decoded at full size is the control that shows the measurement can see the difference."""
    from mmsearch.config import Settings

    path = battery.root / "huge_12000.jpg"
    growth, size = _decode_peak_growth_mb(path, Settings().max_image_pixels, draft=True)
    full_growth, full_size = _decode_peak_growth_mb(path, 200_000_000, draft=False)
    record_property("decode_peak_rss_growth_mb", round(growth, 1))
    print(f"12000x12000 JPEG: peak RSS growth {growth:.1f} MB decoded at {size}, {full_growth:.0f} MB at full size")
    assert size == (1500, 1500) and full_size == (12000, 12000)
    assert full_growth > 300  # the control: a full decode is visible in the measurement
    assert growth < 64, f"decoding grew peak RSS by {growth:.0f} MB"


# --- videos and PDFs ---

@pytest.fixture(scope="module")
def media_battery(tmp_path_factory):
    from badfiles import build_media_battery

    return build_media_battery(tmp_path_factory.mktemp("media_battery"))


@pytest.fixture(scope="module")
def media_indexed(media_battery, tmp_path_factory, tiny_encoder):
    from badfiles import PDF_PAGE_LIMIT
    from indexer.units import MediaOptions

    index_dir = tmp_path_factory.mktemp("media_battery_index")
    report, seconds = index_within_timeout("the media battery", lambda: run_index(
        media_battery[0].path.parent, index_dir, tiny_encoder, workers=1, media=MediaOptions(pdf_max_pages=PDF_PAGE_LIMIT)))
    store = IndexDir(index_dir).open_store()
    try:
        records = store.all_items()
    finally:
        store.close()
    return report, records, seconds


def test_hostile_videos_and_pdfs_are_refused_with_a_reason_or_bounded(media_battery, media_indexed):
    report, records, seconds = media_indexed
    reasons = dict(report.failures)
    assert len(media_battery) >= 12
    for expect in media_battery:
        items = [r for r in records if r.key.startswith(str(expect.path) + "#")]
        low, high = expect.items
        assert low <= len(items) <= high, (expect.name, len(items), reasons.get(str(expect.path)))
        if expect.reason is None:
            assert str(expect.path) not in reasons, (expect.name, reasons[str(expect.path)])
        else:
            assert expect.reason in reasons.get(str(expect.path), ""), (expect.name, reasons.get(str(expect.path)))
    assert set(reasons) == {str(e.path) for e in media_battery if e.reason}
    assert seconds < 60, f"the media battery took {seconds:.0f}s"  # bounded: the 10,000 pages are not all read


MEDIA_RSS = textwrap.dedent(
    """
    import json, sys
    from mmsearch.imaging.pdf import PdfReader
    from mmsearch.imaging.video import VideoSampling, sample_frames

    def peak_kb():
        with open("/proc/self/status") as fh:
            return int(next(line for line in fh if line.startswith("VmHWM")).split()[1])

    video, pdf = sys.argv[1], sys.argv[2]
    next(sample_frames(video, VideoSampling(interval=10)))  # libraries loaded before the baseline
    before = peak_kb()
    frames = sum(1 for _ in sample_frames(video, VideoSampling(interval=10)))
    after_video = peak_kb()
    with PdfReader(pdf) as reader:
        pages = sum(1 for _ in reader.pages(1000, min_side=224))
    print(json.dumps({"frames": frames, "pages": pages, "video_mb": (after_video - before) / 1024,
                      "pdf_mb": (peak_kb() - after_video) / 1024}))
    """
)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="peak RSS is read from /proc")
def test_two_hour_video_and_10000_page_pdf_stream_in_bounded_memory(media_battery, tmp_path, record_property):
    """A two-hour video is sampled (720 frames of 320x240, 166 MB as RGB if they were held; every frame
    of it is decoded: its keyframes are minutes apart) and the first 1,000 pages of a 10,000-page PDF
    are rendered (220 MB as RGB), one at a time: peak RSS hardly grows."""
    from media_data import Scene, write_scenes_video

    colours = [(220, 30, 30), (30, 60, 220), (30, 200, 30), (240, 200, 20)]
    video = write_scenes_video(tmp_path / "two_hours.mp4", [Scene(1800, c) for c in colours], size=(320, 240), fps=1,
                               options={"preset": "ultrafast"})
    pdf = next(e.path for e in media_battery if e.name == "pages_10000.pdf")
    proc = subprocess.run([sys.executable, "-c", MEDIA_RSS, str(video), str(pdf)], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    record_property("two_hour_video_peak_rss_growth_mb", round(facts["video_mb"], 1))
    record_property("pdf_1000_pages_peak_rss_growth_mb", round(facts["pdf_mb"], 1))
    print(f"2-hour video: {facts['frames']} frames, peak RSS +{facts['video_mb']:.1f} MB; "
          f"1000 PDF pages: +{facts['pdf_mb']:.1f} MB")
    assert facts["frames"] == 720 and facts["pages"] == 1000
    assert facts["video_mb"] < 32 and facts["pdf_mb"] < 32
