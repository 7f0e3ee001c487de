"""Sampled frames of a video file (mp4, mov, webm, mkv, avi, ...) through PyAV, whose wheels carry FFmpeg.

Which frames: one at every scene change, and at least one every ``interval`` seconds. How, without
decoding every frame (a 720p stream decodes at a few hundred frames/s on one core, too slow for an
indexer that must run many times faster than real time):

1. the packets are demuxed (cheap: no decoding) and only the keyframe packets go to the decoder.
   Encoders put a keyframe at every scene cut (x264, libvpx and others do by default) and at least
   every few seconds, so keyframes are where scenes start;
2. a decoded keyframe is kept when its colours differ from the last kept frame's (a histogram of a
   32x32 thumbnail) or when ``interval`` has passed since it;
3. where keyframes are further apart than ``interval`` (encoders that place them by frame count only,
   e.g. VP9 in its usual settings), a second demuxer seeks to the keyframe before the gap and decodes
   the gap, keeping a frame every ``interval`` and every frame that starts a new scene there.

So a scene is found at its first frame when the encoder put a keyframe there or when keyframes are
further apart than ``interval``; otherwise (a cut inside a group of frames shorter than ``interval``)
at the next keyframe, at most ``interval`` later, which is within the scene unless the scene is shorter.

It streams: one frame (scaled down to ``min_side``) is held at a time, so a two-hour film costs no
more memory than a clip. Bounds: a frame-size cap (``max_pixels``), a cap on frames per video
(``max_frames``, reported), and keyframes closer than ``MIN_KEYFRAME_GAP`` are not decoded (an
intra-only stream, e.g. MJPEG, would otherwise be decoded in full).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import numpy as np
from PIL import Image

from mmsearch.imaging.decode import DecodeError

log = logging.getLogger(__name__)

VIDEO_EXTS = frozenset({".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi"})
MIN_KEYFRAME_GAP = 0.5  # seconds: keyframes closer to the last decoded one than this are skipped
MIN_SCENE_GAP = 1.0  # seconds: inside a decoded gap, a new scene is taken at most this often
SCENE_CHECK_STEP = 0.25  # seconds: inside a decoded gap, frames are compared at most this often
SIGNATURE_SIDE = 32
COLOUR_LEVELS = 4  # per channel: 64 colour bins


@dataclass(frozen=True)
class VideoSampling:
    """How a video is sampled. ``scene_threshold``: the share of pixels (0..1) that must change colour
    between two frames for the second to start a new scene (see ``_signature``)."""

    interval: float = 10.0
    # Measured on the test videos: another object on the same white background changes 0.021-0.036 of the
    # colours, a shape moving across a scene at most 0.010 (it moves colours, it does not change them). A
    # false cut costs one more frame, a missed one a scene.
    scene_threshold: float = 0.015
    max_frames: int = 5000

    def check(self) -> "VideoSampling":
        if not self.interval > 0:
            raise ValueError("the video sampling interval must be a positive number of seconds")
        if not 0 < self.scene_threshold < 1:
            raise ValueError("the scene threshold must be between 0 and 1")
        if self.max_frames < 1:
            raise ValueError("max frames per video must be at least 1")
        return self


@dataclass
class VideoFrame:
    timestamp: float  # seconds from the start of the stream
    image: Image.Image  # RGB, shorter side at most the requested min_side (never upscaled)
    scene_change: bool  # kept because it differs from the previous kept frame (else: the interval)


def _open(path: str):
    import av

    try:
        return av.open(path, metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise DecodeError(f"not a readable video: {_ffmpeg_reason(exc)}") from exc


def _ffmpeg_reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).split(": '")[0]


def _video_stream(container, path: str, max_pixels: int):
    streams = container.streams.video
    if not streams:
        raise DecodeError("the file has no video stream" + (" (sound only)" if container.streams.audio else ""))
    stream = streams[0]
    ctx = stream.codec_context
    width, height = int(ctx.width or 0), int(ctx.height or 0)
    if width <= 0 or height <= 0:
        raise DecodeError("the video stream declares no frame size (damaged or unsupported)")
    if width * height > max_pixels:
        raise DecodeError(f"video frames are {width}x{height} = {width * height:,} pixels, above the cap of {max_pixels:,}")
    return stream


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    return None if value is None or time_base is None else float(value * time_base)


def _frame_time(frame, time_base: Fraction | None) -> float | None:
    """Seconds of a decoded frame: frames flushed out of the decoder carry a pts but no time base."""
    time = frame.time
    if time is not None and time == time:  # not NaN
        return float(time)
    return _seconds(frame.pts, frame.time_base or time_base)


def _picture(frame, min_side: int) -> Image.Image:
    """The frame as RGB, scaled (by FFmpeg, before conversion) so its shorter side is ``min_side``."""
    width, height = frame.width, frame.height
    scale = min(1.0, min_side / max(1, min(width, height)))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = frame.to_image(width=size[0], height=size[1]) if scale < 1 else frame.to_image()
    rotation = getattr(frame, "rotation", 0) or 0
    if rotation % 360:  # phone videos store their orientation as a display matrix
        image = image.rotate(rotation, expand=True)
    return image


def _signature(frame) -> np.ndarray:
    """The frame's colour histogram (64 bins over a 32x32 thumbnail, summing to 1). Colours, not their
    places: something moving within a scene hardly changes it, a new scene does."""
    small = frame.reformat(width=SIGNATURE_SIDE, height=SIGNATURE_SIDE, format="rgb24").to_ndarray() // (256 // COLOUR_LEVELS)
    bins = (small[..., 0].astype(np.int64) * COLOUR_LEVELS + small[..., 1]) * COLOUR_LEVELS + small[..., 2]
    return np.bincount(bins.ravel(), minlength=COLOUR_LEVELS**3) / bins.size


class _Seeker:
    """Decoded frames from a given time on, from a second demuxer of the same file: it seeks to the
    keyframe at or before that time and decodes forward, re-seeking only to go back."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.container = None
        self.frames: Iterator | None = None
        self.position: float | None = None

    def frames_from(self, start: float) -> Iterator[tuple[object, float]]:
        """(frame, seconds) for every frame at or after ``start`` (within a millisecond), in order."""
        import av

        if self.container is None:
            self.container = _open(self.path)
        stream = self.container.streams.video[0]
        if self.position is None or start < self.position:
            offset = int(start / stream.time_base) if stream.time_base else int(start * 1_000_000)
            self.container.seek(offset, stream=stream, backward=True, any_frame=False)
            self.frames = self.container.decode(stream)
        try:
            for frame in self.frames:
                time = _frame_time(frame, stream.time_base)
                if time is None:
                    continue
                self.position = time
                if time >= start - 1e-3:
                    yield frame, time
        except (av.error.FFmpegError, ValueError) as exc:
            log.debug("%s: decoding stopped after %s s: %s", self.path, self.position, exc)
        self.position = float("inf")  # the stream ends (or breaks) here

    def frame_at(self, target: float):
        return next((frame for frame, _ in self.frames_from(target)), None)

    def close(self) -> None:
        if self.container is not None:
            self.container.close()


def _keyframes(container, stream) -> Iterator:
    """Decoded keyframes, each at least MIN_KEYFRAME_GAP after the previous one decoded."""
    import av

    stream.codec_context.skip_frame = "NONKEY"
    last: float | None = None
    for packet in container.demux(stream):
        if packet.size == 0 or not packet.is_keyframe:
            continue
        time = _seconds(packet.pts if packet.pts is not None else packet.dts, packet.time_base)
        if time is not None and last is not None and time - last < MIN_KEYFRAME_GAP:
            continue
        try:
            frames = stream.decode(packet)
        except av.error.FFmpegError as exc:
            log.debug("undecodable keyframe at %s s: %s", time, exc)
            continue
        last = time
        yield from frames
    try:
        yield from stream.decode(None)  # frames the decoder still holds
    except av.error.FFmpegError:
        return


def sample_frames(path: str, sampling: VideoSampling = VideoSampling(), *, max_pixels: int = 90_000_000,
                  min_side: int = 256) -> Iterator[VideoFrame]:
    """The frames of ``path`` at scene changes and at least every ``sampling.interval`` seconds, in time
    order. Raises DecodeError when not a single frame can be read; a stream damaged part-way yields the
    frames before the damage (logged)."""
    import av

    sampling.check()
    produced = 0
    with _open(path) as container:
        stream = _video_stream(container, path, max_pixels)
        end = float(container.duration / 1_000_000) if container.duration else None
        seeker = _Seeker(path)
        last_time: float | None = None
        last_sig: np.ndarray | None = None

        def keep(frame, time: float, scene: bool) -> VideoFrame:
            nonlocal last_time, last_sig, produced
            last_time, last_sig, produced = time, _signature(frame), produced + 1
            return VideoFrame(round(time, 3), _picture(frame, min_side), scene)

        def changed(frame) -> bool:
            return last_sig is not None and 0.5 * float(np.abs(_signature(frame) - last_sig).sum()) > sampling.scene_threshold

        def fill_until(limit: float) -> Iterator[VideoFrame]:
            """Keyframes further apart than the interval: decode the gap, keeping a frame every interval and
            every frame that starts a new scene (the gap has no keyframe to mark a cut)."""
            if last_time is None or limit - last_time <= sampling.interval + 1e-3:
                return
            checked = last_time
            for frame, time in seeker.frames_from(last_time):
                if time >= limit - 1e-3 or produced >= sampling.max_frames:
                    return
                if time <= last_time:
                    continue
                due = time - last_time >= sampling.interval - 1e-3
                scene = False
                if not due and time - last_time >= MIN_SCENE_GAP and time - checked >= SCENE_CHECK_STEP:
                    checked, scene = time, changed(frame)
                if due or scene:
                    yield keep(frame, time, scene)

        def catch_up(limit: float, pending) -> Iterator[VideoFrame]:
            """Before a frame at ``limit``: if the interval has run out since the last kept frame, keep the
            keyframe held back (the last one before the deadline), then decode what gap is still too long."""
            if last_time is None or limit - last_time <= sampling.interval + 1e-3:
                return
            if pending is not None and pending[1] > last_time:
                yield keep(pending[0], pending[1], False)
            yield from fill_until(limit)

        pending = None  # the last keyframe decoded and not kept: (frame, seconds)
        try:
            for frame in _keyframes(container, stream):
                time = _frame_time(frame, stream.time_base)
                if time is None or (last_time is not None and time <= last_time):
                    continue
                yield from catch_up(time, pending)
                pending = None
                if produced >= sampling.max_frames:
                    break
                scene = changed(frame)
                if last_time is None or scene or time - last_time >= sampling.interval - 1e-3:
                    yield keep(frame, time, scene)
                else:
                    pending = (frame, time)
            if end is not None and produced < sampling.max_frames:
                yield from catch_up(end, pending)
        except (av.error.FFmpegError, ValueError, MemoryError) as exc:
            if produced == 0:
                raise DecodeError(f"not a readable video: {_ffmpeg_reason(exc)}") from exc
            log.warning("%s: video damaged after %.1f s, indexed the frames before: %s", path, last_time or 0.0, exc)
        finally:
            seeker.close()
    if produced == 0:
        raise DecodeError("no frame of the video could be decoded (empty, truncated or damaged stream)")


def frame_at(path: str, timestamp: float, *, max_pixels: int = 90_000_000, min_side: int = 256) -> Image.Image:
    """The frame shown at ``timestamp`` seconds (a search hit's thumbnail), found by seeking."""
    with _open(path) as container:
        _video_stream(container, path, max_pixels)
    seeker = _Seeker(path)
    try:
        frame = seeker.frame_at(max(0.0, float(timestamp)))
        if frame is None:
            raise DecodeError(f"no frame at {timestamp:.3f} s")
        return _picture(frame, min_side)
    finally:
        seeker.close()
