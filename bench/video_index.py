"""Video indexing speed: `mmsearch index` of one video, as a multiple of the video's real time.

    python -m bench.video_index --size smoke|full [--json out.json] [--work-dir DIR]

Writes a synthetic video once (cached in the work dir): scenes of pictures from data/sample and plain
colours, 8-20 s each, with a shape moving across every frame, encoded by libx264 with its default
keyframe placement (a keyframe at each cut, at least every 250 frames), as cameras and editors do.
Full size is 10 minutes of 1280x720 at 30 fps: one minute is encoded and its packets are copied ten times
into one file (stream copy, timestamps shifted; each copy starts at a keyframe), which costs a tenth of
encoding ten minutes and decodes exactly like it. Smoke size is 20 s of 320x240 at 12 fps.
``--content phone`` writes a harder video instead: sample pictures with grain, a slow camera pan and
per-frame sensor noise at 6 Mbit/s (a phone's 720p bitrate), where every frame costs the decoder more
and the pan makes more scene changes. Then measures:

* ``mmsearch index`` as a user runs it (a fresh process: start-up, model load, scan, sampling, encode,
  write): real-time multiple = video seconds / wall-clock seconds (target: >= 20x on 2 cores), and the
  CPU seconds it used (all its processes), which a busy shared machine does not inflate;
* the same run's baseline: decoding every frame of the video with PyAV, no model at all (what any
  sampler that does not seek keyframes pays before embedding a single frame);
* sampling alone (``mmsearch.imaging.video.sample_frames``): frames kept and seconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from bench.common import REPO, emit_json, machine, print_table, python, run_child

SIZES = {
    "smoke": {"seconds": 20, "size": (320, 240), "fps": 12, "repeat": 1},
    "full": {"seconds": 600, "size": (1280, 720), "fps": 30, "repeat": 10},
}
TARGET_X_REAL_TIME = 20
CONTENTS = ("flat", "phone")
PHONE_BITRATE = 6_000_000


def _scenes(total: float):
    """Scenes of 8-20 s cycling through sample pictures and colours, ``total`` seconds in all."""
    sys.path.insert(0, str(REPO / "tests"))
    from media_data import Scene

    pictures = sorted((REPO / "data" / "sample").glob("*/*.png"))
    colours = [(200, 40, 40), (40, 90, 200), (40, 170, 70), (230, 200, 40), (120, 60, 160)]
    scenes, elapsed, n = [], 0.0, 0
    while elapsed < total:
        length = min(total - elapsed, 8 + (n * 7) % 13)
        picture = pictures[n % len(pictures)] if n % 3 else colours[n % len(colours)]
        scenes.append(Scene(length, picture))
        elapsed += length
        n += 1
    return scenes


def _phone_frames(seconds: float, size: tuple[int, int], fps: int, seed: int = 0):
    """RGB frames of grainy sample pictures (a new one every 8-20 s) seen through a slow pan, with fresh
    sensor noise on every frame: content a codec cannot make cheap."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    pictures = sorted((REPO / "data" / "sample").glob("*/*.png"))
    width, height = size
    pan_x, pan_y = width // 3, height // 4
    left = 0
    for n in range(int(seconds * fps)):
        if left <= 0:
            picture = Image.open(pictures[rng.integers(len(pictures))]).convert("RGB").resize((width + pan_x, height + pan_y))
            scene = np.clip(np.asarray(picture, dtype=np.int16) + rng.integers(-40, 40, (height + pan_y, width + pan_x, 3), dtype=np.int16), 0, 255)
            left = int(rng.integers(8, 20)) * fps
        left -= 1
        x, y = (n * 3) % pan_x, (n * 2) % pan_y
        grain = rng.integers(-12, 12, (height, width, 3), dtype=np.int16)
        yield np.clip(scene[y : y + height, x : x + width] + grain, 0, 255).astype(np.uint8)


def _write_phone_segment(path: Path, seconds: float, size: tuple[int, int], fps: int) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = PHONE_BITRATE
        stream.options = {"preset": "veryfast"}
        for array in _phone_frames(seconds, size, fps):
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_video(work_dir: Path, size: str, content: str = "flat") -> Path:
    spec = SIZES[size]
    name = f"{size}-{content}" if content != "flat" else size
    folder = work_dir / f"video-{name}"
    path = folder / "film.mp4"
    if path.exists():
        return path
    sys.path.insert(0, str(REPO / "tests"))
    from media_data import write_scenes_video

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    segment = work_dir / f"video-{name}-segment.mp4"
    seconds = spec["seconds"] / spec["repeat"]
    if content == "phone":
        _write_phone_segment(segment, seconds, spec["size"], spec["fps"])
    else:
        write_scenes_video(segment, _scenes(seconds), size=spec["size"], fps=spec["fps"], options={"preset": "veryfast"})
    partial = work_dir / f"video-{name}-partial.mp4"
    _repeat(segment, partial, spec["repeat"])
    partial.rename(path)
    segment.unlink()
    return path


def _repeat(source: Path, target: Path, times: int) -> None:
    """``source`` played ``times`` times in a row, by copying its packets (no re-encoding)."""
    import av

    with av.open(str(source)) as probe:
        stream = probe.streams.video[0]
        span = max(p.pts + p.duration for p in probe.demux(stream) if p.pts is not None)  # in the stream's time base
    with av.open(str(target), "w") as out:
        out_stream = None
        for n in range(times):
            with av.open(str(source)) as container:
                stream = container.streams.video[0]
                if out_stream is None:
                    out_stream = out.add_stream_from_template(stream)
                for packet in container.demux(stream):
                    if packet.dts is None:
                        continue
                    packet.pts += n * span
                    packet.dts += n * span
                    packet.stream = out_stream
                    out.mux(packet)


def decode_every_frame(path: Path) -> dict:
    """The baseline: every frame through the decoder (threaded as FFmpeg chooses), nothing else."""
    import av

    started = time.perf_counter()
    frames = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for _ in container.decode(stream):
            frames += 1
    return {"frames": frames, "seconds": round(time.perf_counter() - started, 3)}


def sample_only(path: Path) -> dict:
    from mmsearch.imaging.video import VideoSampling, sample_frames

    started = time.perf_counter()
    frames = list(sample_frames(str(path), VideoSampling(), min_side=224))
    return {"frames": len(frames), "scene_changes": sum(f.scene_change for f in frames),
            "seconds": round(time.perf_counter() - started, 3)}


def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return env


def run(size: str, work_dir: Path, content: str = "flat") -> dict:
    work_dir.mkdir(parents=True, exist_ok=True)
    video = make_video(work_dir, size, content)
    duration = SIZES[size]["seconds"]
    env = _env()
    warm = run_child([python(), "-c", "from mmsearch.encoders import load_encoder; load_encoder('mmsearch-lite', 'cpu')"], env)
    if warm.returncode != 0:
        raise RuntimeError(f"model load failed:\n{warm.stderr[-3000:]}")
    index_dir = work_dir / f"video-index-{size}-{content}"
    shutil.rmtree(index_dir, ignore_errors=True)
    child = run_child([python(), "-m", "mmsearch", "index", str(video.parent), "--index-dir", str(index_dir)], env)
    if child.returncode != 0:
        raise RuntimeError(f"mmsearch index failed:\n{child.stderr[-3000:]}")
    baseline = decode_every_frame(video)
    sampling = sample_only(video)
    x_real_time = duration / child.seconds
    result = {
        "machine": machine(), "size": size, "content": content, "video": {"seconds": duration, "size": list(SIZES[size]["size"]),
                                                      "fps": SIZES[size]["fps"], "bytes": video.stat().st_size},
        "index": {"seconds": round(child.seconds, 3), "x_real_time": round(x_real_time, 1), "peak_rss_mb": round(child.peak_rss_mb, 1),
                  # CPU seconds (all processes of the run): on a shared machine, what the run would take on 2 idle cores is about half
                  "cpu_seconds": round(child.cpu_seconds, 2), "x_real_time_per_cpu_second": round(duration / max(child.cpu_seconds, 1e-9), 1),
                  "output": child.stdout.strip()},
        "sampling_only": sampling,
        "baseline_decode_every_frame": dict(baseline, x_real_time=round(duration / baseline["seconds"], 1)),
        "speedup_vs_decoding_every_frame": round(baseline["seconds"] / child.seconds, 2),
        "target_x_real_time": TARGET_X_REAL_TIME,
    }
    print_table(
        f"video indexing ({size}, {content}: {duration} s of {SIZES[size]['size'][0]}x{SIZES[size]['size'][1]} at {SIZES[size]['fps']} fps)",
        [("mmsearch index, end to end", result["index"]["seconds"], result["index"]["x_real_time"], sampling["frames"]),
         ("sampling alone (keyframes + gaps)", sampling["seconds"], round(duration / max(sampling["seconds"], 1e-9), 1), sampling["frames"]),
         ("baseline: decode every frame", baseline["seconds"], result["baseline_decode_every_frame"]["x_real_time"], baseline["frames"])],
        ("what", "seconds", "x real time", "frames"),
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=tuple(SIZES), default="smoke")
    parser.add_argument("--work-dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "mmsearch-bench")
    parser.add_argument("--content", choices=CONTENTS, default="flat",
                        help="flat synthetic scenes (default) or phone-like grain, pan and noise at 6 Mbit/s")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    emit_json(run(args.size, args.work_dir, args.content), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
