"""Videos made here with PyAV, in the codecs and containers archives hold: moving coloured squares on a grey
ground, each frame different, so a wrong frame shows."""

from fractions import Fraction
from pathlib import Path

import numpy as np


def write_video(path: Path, seconds: float = 3.0, fps: Fraction = Fraction(10), size: tuple[int, int] = (64, 48),
                codec: str = "libx264", bframes: int = 0, gop: int = 10, faststart: bool = False) -> Path:
    """``seconds`` of video at ``fps`` and ``size`` (width, height); the container follows the file's suffix.
    ``faststart`` puts an MP4's index first, as web video is: cut short, such a file still opens."""
    import av

    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=options) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        if bframes:
            stream.codec_context.max_b_frames = bframes
        for i in range(round(seconds * fps)):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame_pixels(i, size), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def frame_pixels(i: int, size: tuple[int, int]) -> np.ndarray:
    """Frame ``i``: a red square moving right and a blue one moving down."""
    width, height = size
    pixels = np.full((height, width, 3), 128, dtype=np.uint8)
    x, y = (3 * i) % (width - 12), (2 * i) % (height - 12)
    pixels[4:16, x:x + 12] = (220, 30, 30)
    pixels[y:y + 12, 4:16] = (30, 70, 220)
    return pixels


def write_audio_only(path: Path, seconds: float = 1.0) -> Path:
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = int(16000 * seconds)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, samples), dtype=np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
