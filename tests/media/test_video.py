from fractions import Fraction

import numpy as np
import pytest

from captioner.media.image import DecodeFailure, Resize
from captioner.media.sandbox import Decoder
from captioner.media.video import VideoDecoded, VideoPlan, frame_times, segment_bounds
from videos import frame_pixels, write_audio_only, write_video

PLAN = VideoPlan(segment_s=10, max_video_s=3600, max_pixels=10**8)
FULL = Resize(48, 64)  # the test videos' own size: no resampling between what was encoded and what we compare


@pytest.fixture(scope="module")
def decoder():
    with Decoder(["JPEG", "PNG"], 10**8, 30, 2048) as d:
        yield d


def test_segments_and_frame_times():
    assert segment_bounds(25, 10) == [(0, 10), (10, 20), (20, 25)]
    assert segment_bounds(3, 10) == [(0, 3)]  # a shorter video is one segment
    assert segment_bounds(20, 10) == [(0, 10), (10, 20)]
    assert frame_times(10, 20, 1) == [15] and frame_times(0, 8, 4) == [1, 3, 5, 7]


def _red_x(pixels: np.ndarray) -> int:
    """Where the moving red square is: its left edge in the top band."""
    band = pixels[4:16].astype(int)
    red = (band[..., 0] > 150) & (band[..., 1] < 100)
    return int(np.argmax(red.any(axis=0)))


@pytest.mark.parametrize("name,codec,fps,bframes", [
    ("h264.mp4", "libx264", Fraction(10), 0),
    ("vp9.webm", "libvpx-vp9", Fraction(10), 0),
    ("mpeg4.mov", "mpeg4", Fraction(10), 0),
    ("ntsc.mkv", "mpeg4", Fraction(30000, 1001), 0),
    ("bframes.mp4", "libx264", Fraction(10), 2),
])
def test_each_codec_gives_the_frame_at_the_time_asked(decoder, tmp_path, name, codec, fps, bframes):
    path = write_video(tmp_path / name, seconds=25, fps=fps, codec=codec, bframes=bframes)
    result = decoder.decode_video(str(path), {}, [FULL], [1], PLAN)
    assert isinstance(result, VideoDecoded), result
    assert result.segments == 3 and [s.index for s in result.decoded] == [0, 1, 2]
    assert abs(result.duration_s - 25) < 0.2
    for segment in result.decoded:
        assert 0 <= segment.start_s < segment.end_s <= result.duration_s
        frame = round((segment.start_s + segment.end_s) / 2 * float(fps))  # the middle frame, by its index
        assert abs(_red_x(segment.pixels[0][0]) - _red_x(frame_pixels(frame, (64, 48)))) <= 3


def test_several_frames_per_segment_and_a_portrait_video(decoder, tmp_path):
    path = write_video(tmp_path / "portrait.mp4", seconds=4, size=(48, 64))
    result = decoder.decode_video(str(path), {}, [Resize(32, 32), Resize(16, 16)], [4, 1], PLAN)
    assert (result.width, result.height) == (48, 64)
    assert result.decoded[0].pixels[0].shape == (4, 32, 32, 3) and result.decoded[0].pixels[1].shape == (1, 16, 16, 3)
    assert len({frame.tobytes() for frame in result.decoded[0].pixels[0]}) == 4  # four different moments


def test_done_segments_are_not_decoded(decoder, tmp_path):
    path = write_video(tmp_path / "long.mp4", seconds=35)
    result = decoder.decode_video(str(path), {}, [FULL], [1], PLAN, skip=frozenset({0, 2}))
    assert result.segments == 4 and [s.index for s in result.decoded] == [1, 3]


def test_every_bad_video_is_one_error_value(decoder, tmp_path):
    good = write_video(tmp_path / "good.mp4", seconds=3)
    data = good.read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.mkv").write_bytes(b"")
    (tmp_path / "text.mkv").write_text("this is not a video\n" * 10)
    write_audio_only(tmp_path / "audio.mp4")
    expected = {"truncated.mp4": "truncated", "empty.mkv": "empty", "text.mkv": "not_a_video",
                "audio.mp4": "no_video_stream", "gone.mp4": "not_found"}
    for name, kind in expected.items():
        result = decoder.decode_video(str(tmp_path / name), {}, [FULL], [1], PLAN)
        assert isinstance(result, DecodeFailure) and result.error_type == kind, (name, result)
    small = VideoPlan(segment_s=10, max_video_s=2, max_pixels=64 * 48 - 1)
    assert decoder.decode_video(str(good), {}, [FULL], [1], small).error_type == "too_many_pixels"
    too_long = VideoPlan(segment_s=10, max_video_s=2, max_pixels=10**8)
    assert decoder.decode_video(str(good), {}, [FULL], [1], too_long).error_type == "too_long"


def test_corrupt_packets_in_the_middle_leave_the_segments_that_decode(decoder, tmp_path):
    path = write_video(tmp_path / "corrupt.mp4", seconds=25)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 2000] = bytes(2000)
    path.write_bytes(bytes(data))
    result = decoder.decode_video(str(path), {}, [FULL], [1], PLAN)
    assert isinstance(result, VideoDecoded) and result.decoded and result.decoded[0].index == 0
    assert sorted([s.index for s in result.decoded] + [f.index for f in result.failed]) == [0, 1, 2]


def test_a_video_cut_short_fails_the_segments_past_its_end_not_with_a_stale_frame(decoder, tmp_path):
    path = write_video(tmp_path / "cut.mp4", seconds=35, faststart=True)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.45)])  # the index still says 35 s
    result = decoder.decode_video(str(path), {}, [FULL], [1], PLAN)
    assert isinstance(result, VideoDecoded) and result.segments == 4
    assert [s.index for s in result.decoded][:1] == [0]
    assert {f.index for f in result.failed} >= {3} and all(f.error_type == "truncated" for f in result.failed)
    done_before = frozenset(s.index for s in result.decoded)  # a rerun: what is left fails segment by segment
    again = decoder.decode_video(str(path), {}, [FULL], [1], PLAN, skip=done_before)
    assert isinstance(again, VideoDecoded) and not again.decoded
    assert [f.index for f in again.failed] == [f.index for f in result.failed]


def test_a_video_replaced_since_it_was_listed_is_not_decoded(decoder, tmp_path):
    path = write_video(tmp_path / "clip.mp4", seconds=3)
    result = decoder.decode_video(str(path), {}, [FULL], [1], PLAN, size=path.stat().st_size + 1)
    assert isinstance(result, DecodeFailure) and result.error_type == "changed"
