"""Video files -> segments of frames at each model's size, or an error value. No Ray here.

A video is cut into segments of ``segment_s`` seconds (a shorter video is one segment); each segment gives
``frames`` frames spread evenly over it for each model (one frame, the middle one, for an image model). A frame
is found by seeking to the keyframe before its time and decoding forward from there, never by decoding the whole
video, and the file is read through a file object (ranged reads on object stores), so taking a few frames of a
large video reads little of it. PyAV's wheels bundle FFmpeg.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from .image import DecodeFailure, Resize, resize

READ_BYTES = 1 << 20  # read-ahead of a video's file object: a seek on an object store reads this, not 50 MiB
# Container signatures: a file that starts like a video but does not open was cut short.
_VIDEO_MAGIC = ((4, b"ftyp"), (0, b"\x1a\x45\xdf\xa3"), (8, b"AVI "), (0, b"\x00\x00\x01\xba"))


@dataclass(frozen=True)
class VideoPlan:
    """How to cut videos, and what a video may cost before it is an error row instead."""

    segment_s: float  # seconds per segment
    max_video_s: float  # longer videos are refused (too_long) before any frame is decoded
    max_pixels: int  # frame width x height; more is too_many_pixels


@dataclass(frozen=True)
class Segment:
    index: int  # from 0
    start_s: float
    end_s: float
    pixels: tuple[np.ndarray, ...]  # per requested Resize: (frames, height, width, 3) uint8


@dataclass(frozen=True)
class SegmentFailure:
    index: int
    start_s: float
    end_s: float
    error_type: str  # truncated (the video ends before it), read_error (the store failed), decode_error
    message: str


@dataclass(frozen=True)
class VideoDecoded:
    width: int
    height: int
    duration_s: float
    segments: int  # how many segments the whole video has
    decoded: tuple[Segment, ...]  # the segments asked for that decoded, in order
    failed: tuple[SegmentFailure, ...] = ()  # those that did not: corrupt packets, a cut-short file


def segment_bounds(duration_s: float, segment_s: float) -> list[tuple[float, float]]:
    """(start, end) of each segment: ``segment_s`` long, the last one shorter, at least one."""
    count = max(1, math.ceil(duration_s / segment_s - 1e-9))
    return [(k * segment_s, min((k + 1) * segment_s, duration_s)) for k in range(count)]


def frame_times(start: float, end: float, frames: int) -> list[float]:
    """``frames`` times spread evenly over [start, end): the middles of equal parts."""
    return [start + (i + 0.5) * (end - start) / frames for i in range(frames)]


def open_video(uri: str, options: dict, listed_bytes: int | None) -> BinaryIO | DecodeFailure:
    """The video's file object through fsspec (ranged reads), or why not; a video whose size is not the one
    listed has changed since, and is not captioned under its old identity."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(uri, **options)
        now = fs.size(path)
        if listed_bytes is not None and now != listed_bytes:
            return DecodeFailure("changed", f"object is {now} bytes now, {listed_bytes} when listed")
        return fs.open(path, "rb", block_size=READ_BYTES)
    except FileNotFoundError as exc:
        return DecodeFailure("not_found", f"object is gone: {exc}")
    except PermissionError as exc:
        return DecodeFailure("forbidden", f"no permission to read the object: {exc}")
    except OSError as exc:
        return DecodeFailure("read_error", f"{type(exc).__name__}: {exc}")


def probe(file: BinaryIO, plan: VideoPlan):
    """Open a video and check it against the plan: (container, stream, duration) or a DecodeFailure."""
    import av

    try:
        head = file.read(16)
        file.seek(0)
        if not head:
            return DecodeFailure("empty", "file is empty (0 bytes)")
        container = av.open(file, mode="r", metadata_errors="ignore")
    except OSError as exc:  # the store, through the file object: worth another try on the next run
        return DecodeFailure("read_error", f"{type(exc).__name__}: {exc}")
    except (av.error.FFmpegError, ValueError) as exc:
        started = any(head[at:at + len(magic)] == magic for at, magic in _VIDEO_MAGIC)
        kind = "truncated" if started else "not_a_video"
        return DecodeFailure(kind, f"cannot open as a video: {exc}")
    stream = next((s for s in container.streams if s.type == "video"), None)
    if stream is None:
        container.close()
        return DecodeFailure("no_video_stream", "the file holds no video stream (audio only?)")
    if stream.codec_context is None:
        container.close()
        return DecodeFailure("unsupported_codec", f"no decoder for the video codec {stream.codec_tag!r}")
    stream.thread_count = 1  # the decode child has one core; threads would also cost address space
    width, height = stream.codec_context.width, stream.codec_context.height
    duration = _duration(container, stream)
    failure = None
    if width * height > plan.max_pixels:
        failure = DecodeFailure("too_many_pixels", f"frames are {width} x {height}, over the {plan.max_pixels:,} "
                                "pixel limit (--max-image-pixels)")
    elif duration is None or duration <= 0:
        failure = DecodeFailure("truncated", "the video states no duration and holds no frame")
    elif duration > plan.max_video_s:
        failure = DecodeFailure("too_long", f"the video lasts {duration:.0f} s, over the {plan.max_video_s:g} s "
                                "limit (--max-video-s)")
    if failure:
        container.close()
        return failure
    return container, stream, duration


def decode_video(container, stream, duration: float, sizes: Sequence[Resize], frames: Sequence[int],
                 plan: VideoPlan, skip: frozenset[int] = frozenset()) -> VideoDecoded | DecodeFailure:
    """Frames of every segment not in ``skip``: ``frames[j]`` of them at ``sizes[j]``, each (F, H, W, 3). A
    segment that does not decode is a SegmentFailure and the next one is tried; when none decodes (and none was
    done before), the video is one DecodeFailure."""
    import av

    bounds = segment_bounds(duration, plan.segment_s)
    decoded, failed = [], []
    try:
        for index, (start, end) in enumerate(bounds):
            if index in skip:
                continue
            try:
                per_size = []
                for size, count in zip(sizes, frames):
                    images = [_frame_at(container, stream, t, plan.segment_s) for t in frame_times(start, end, count)]
                    per_size.append(np.stack([np.asarray(resize(img, size), dtype=np.uint8) for img in images]))
                decoded.append(Segment(index, start, end, tuple(per_size)))
            except EOFError as exc:
                failed.append(SegmentFailure(index, start, end, "truncated", str(exc)))
            except OSError as exc:
                failed.append(SegmentFailure(index, start, end, "read_error", f"{type(exc).__name__}: {exc}"))
            except av.error.FFmpegError as exc:
                failed.append(SegmentFailure(index, start, end, "decode_error", str(exc)))
    finally:
        container.close()
    if failed and not decoded and not skip:  # nothing of it decodes: one error row for the file
        first = failed[0]
        return DecodeFailure(first.error_type, f"no segment decodes: {first.message}")
    codec = stream.codec_context
    return VideoDecoded(codec.width, codec.height, duration, len(bounds), tuple(decoded), tuple(failed))


def frame_at(file: BinaryIO, t: float):
    """The frame of a video at ``t`` seconds, as an RGB image (for a look at a segment, as the report takes)."""
    import av

    with av.open(file, mode="r", metadata_errors="ignore") as container:
        stream = next(s for s in container.streams if s.type == "video")
        stream.thread_count = 1
        return _frame_at(container, stream, t)


def _duration(container, stream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000  # microseconds
    return None


def _frame_at(container, stream, t: float, reach: float = math.inf):
    """The first frame at or after ``t`` seconds (the last one, should the video end less than ``reach`` seconds
    before: a file cut short past that gives EOFError, not a stale frame), as RGB."""
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    container.seek(int((start + t) / stream.time_base), stream=stream, backward=True)
    last = None
    for frame in container.decode(stream):
        last = frame
        if frame.time is not None and frame.time - start >= t - 1e-6:
            break
    if last is None or (last.time is not None and last.time - start < t - reach):
        raise EOFError(f"the video ends before {t:.1f} s")
    return last.to_image()
