"""The bounded decoding process: a child that never answers (stopped), memory-hungry images, a killed child."""

import fcntl
import io
import os
import pickle
import signal
import subprocess
import sys
import termios
import threading
import time

import numpy as np
import pytest
from PIL import Image

from captioner.media import image as images
from captioner.media import sandbox
from captioner.config import DecodeConfig
from captioner.media.image import Resize
from conftest import jpeg_bytes

FORMATS = DecodeConfig().formats
SIZES = [Resize(16, 16)]


def _flat_png(side: int) -> bytes:
    """A few KB on disk, ``side``² grey pixels to decode: 8000 takes ~0.5 s and ~250 MB to decode to RGB."""
    buf = io.BytesIO()
    Image.new("L", (side, side), 90).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def decoder():
    with sandbox.Decoder(FORMATS, max_pixels=10**9, timeout_s=10.0, memory_mb=1024) as d:
        yield d


def test_same_pixels_as_decoding_in_process(decoder):
    data = jpeg_bytes(3, size=(80, 60))
    child = decoder.decode(data, [Resize(16, 16), Resize(8, 8, crop=True)])
    here = images.decode(data, [Resize(16, 16), Resize(8, 8, crop=True)], formats=FORMATS, max_pixels=10**9)
    assert all(np.array_equal(a, b) for a, b in zip(child.pixels, here.pixels))
    assert (child.width, child.height) == (80, 60)
    assert decoder.decode(b"not an image", SIZES).error_type == "not_an_image"


@pytest.mark.skipif(not hasattr(fcntl, "F_GETPIPE_SZ"), reason="pipe sizes are Linux's")
def test_a_photo_crosses_to_the_child_in_few_writes(decoder):
    big = jpeg_bytes(4, size=(1600, 1200)) + b"\0" * (3 << 20)  # a 3 MB photo: trailing bytes are ignored by JPEG
    assert decoder.decode(big, SIZES).width == 1600
    for pipe in (decoder._proc.stdin, decoder._proc.stdout):
        assert fcntl.fcntl(pipe.fileno(), fcntl.F_GETPIPE_SZ) == sandbox.PIPE_BYTES


def test_a_slow_decode_is_cut_off_and_the_next_image_still_decodes():
    with sandbox.Decoder(FORMATS, max_pixels=10**9, timeout_s=0.05, memory_mb=1024) as decoder:
        decoder.decode(jpeg_bytes(0), SIZES)  # started and warm
        os.kill(decoder._proc.pid, signal.SIGSTOP)  # a decode that never ends, on any machine
        result = decoder.decode(jpeg_bytes(1), SIZES)
        assert result.error_type == "timeout" and "--decode-timeout-s" in result.message
        assert isinstance(decoder.decode(jpeg_bytes(1), SIZES), images.Decoded)


def test_a_memory_hungry_decode_fails_alone_under_the_cap():
    with sandbox.Decoder(FORMATS, max_pixels=10**9, timeout_s=30.0, memory_mb=64) as decoder:
        result = decoder.decode(_flat_png(6000), SIZES)  # 36 MB grey, 108 MB as RGB
        assert result.error_type in ("out_of_memory", "decoder_crashed"), result
        assert isinstance(decoder.decode(jpeg_bytes(2), SIZES), images.Decoded)
        assert isinstance(sandbox.Decoder(FORMATS, 10**9, 30.0, 1024).decode(_flat_png(6000), SIZES),
                          images.Decoded)  # the same image fits a bigger cap


def test_a_child_killed_mid_decode_is_that_images_error_only():
    with sandbox.Decoder(FORMATS, max_pixels=10**9, timeout_s=30.0, memory_mb=1024) as decoder:
        decoder.decode(jpeg_bytes(0), SIZES)
        victim = decoder._proc.pid
        os.kill(victim, signal.SIGSTOP)  # it takes the request and never answers: killed once the request is sent
        request_pipe = decoder._proc.stdin.fileno()

        def kill_once_sent() -> None:
            while not int.from_bytes(fcntl.ioctl(request_pipe, termios.FIONREAD, b"\0" * 4), "little"):
                time.sleep(0.01)
            os.kill(victim, signal.SIGKILL)

        threading.Thread(target=kill_once_sent, daemon=True).start()
        result = decoder.decode(jpeg_bytes(1), SIZES)
        assert result.error_type == "decoder_crashed" and "died" in result.message
        assert isinstance(decoder.decode(jpeg_bytes(1), SIZES), images.Decoded)
        assert decoder._proc.pid != victim


def test_the_child_ends_itself_when_nobody_stops_a_runaway_decode():
    """The kernel timer in the child is the backstop should its parent be gone (a microsecond: no machine decodes
    64 megapixels in that)."""
    child = subprocess.Popen([sys.executable, "-m", "captioner.media.sandbox", "1024", "0.000001"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdout.read(1) == b"R"
    data = _flat_png(8000)
    request = pickle.dumps(("image", (tuple(SIZES), FORMATS, 10**9), len(data)))
    child.stdin.write(len(request).to_bytes(8, "little") + request + data)
    child.stdin.flush()
    assert child.wait(timeout=10) == -signal.SIGALRM


def test_one_shared_decoder_per_setting():
    assert sandbox.shared(FORMATS, 10, 1.0, 64) is sandbox.shared(FORMATS, 10, 1.0, 64)
    assert sandbox.shared(FORMATS, 10, 1.0, 64) is not sandbox.shared(FORMATS, 11, 1.0, 64)
