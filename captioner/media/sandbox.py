"""Decoding in a child process with a time budget and a memory cap, so a hostile image costs one error row.

Pillow decodes in C. A decoder stuck in a loop cannot be interrupted from Python (signal handlers run only
between bytecodes, and only on the main thread, while Ray runs some user code on pool threads), and a header
that asks for gigabytes would grow the Ray worker until the node's OOM killer takes the whole batch down. A
child process can be bounded from outside: it runs ``image.decode`` under an address-space limit, a kernel
timer kills it should the parent be gone, and the parent kills it when an image overruns its budget. One
child serves many files and is started again after a failure. Videos are read by the child itself, through
fsspec (ranged reads), with a budget of ``timeout_s`` to open one and as much again per segment it decodes, and
an address-space allowance that grows with the frames it returns. ``Decoder`` runs it as ``python -m
captioner.media.sandbox MEMORY_MB TIMEOUT_S``; both speak length-prefixed pickles over the child's stdin/stdout.
"""

import contextlib
import fcntl
import logging
import os
import pickle
import resource
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from .image import Decoded, DecodeFailure, Resize, decode
from .video import VideoDecoded, VideoPlan, decode_video, open_video, probe, segment_bounds

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<Q")
_READY = b"R"
START_TIMEOUT_S = 120.0  # the child imports Pillow and numpy; generous for a loaded node
PIPE_BYTES = 1 << 20  # the most an unprivileged process may ask for by default
KILL_GRACE_S = 1.0  # the child's own timer fires this long after the parent's budget, as a backstop
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")  # one each: idle pools reserve memory


class DecoderUnavailable(RuntimeError):
    """The child could not start: the worker's trouble, not the file's, so worth another try later."""


class Decoder:
    """Decoding in a child process: at most ``timeout_s`` and ``memory_mb`` MiB per image (per video segment, for
    time)."""

    def __init__(self, formats: Sequence[str], max_pixels: int, timeout_s: float, memory_mb: int) -> None:
        self.formats = tuple(formats)
        self.max_pixels = max_pixels
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def decode(self, data: bytes, sizes: Sequence[Resize]) -> Decoded | DecodeFailure:
        """One image: at most ``timeout_s``."""
        return self._call(("image", (tuple(sizes), self.formats, self.max_pixels), len(data)), data)

    def decode_video(self, uri: str, options: dict, sizes: Sequence[Resize], frames: Sequence[int],
                     plan: VideoPlan, skip: frozenset[int] = frozenset(),
                     size: int | None = None) -> VideoDecoded | DecodeFailure:
        """One video, read by the child from ``uri`` through fsspec: ``timeout_s`` to open it, then that much
        per segment to decode, so the budget scales with the video's length. ``size``: as listed, so a video
        replaced since is not captioned under its old identity."""
        return self._call(("video", (uri, options, tuple(sizes), tuple(frames), plan, skip, size), 0), b"")

    def _call(self, request: tuple, data: bytes) -> Decoded | VideoDecoded | DecodeFailure:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            try:
                self._send(pickle.dumps(request), data)
                reply = pickle.loads(self._receive(time.monotonic() + self.timeout_s))
                if isinstance(reply, int):  # a video's segment count: its budget
                    reply = pickle.loads(self._receive(time.monotonic() + self.timeout_s * max(1, reply)))
            except TimeoutError:
                self._stop()
                return DecodeFailure("timeout", f"decoding took longer than {self.timeout_s:g} s (--decode-timeout-s)")
            except (EOFError, OSError):
                code = self._stop()
                if code == -signal.SIGALRM:
                    return DecodeFailure("timeout", f"decoding took longer than {self.timeout_s:g} s "
                                         "(--decode-timeout-s)")
                return DecodeFailure("decoder_crashed", f"the decoding process died (exit status {code}); the "
                                     f"file may need more than {self.memory_mb} MiB (--decode-memory-cap-mb)")
            return reply

    def _start(self) -> None:
        package_root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, **{name: "1" for name in _THREAD_VARS}}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "captioner.media.sandbox", str(self.memory_mb), str(self.timeout_s + KILL_GRACE_S)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
        )
        if hasattr(fcntl, "F_SETPIPE_SZ"):  # Linux: a 3 MB photo in 3 writes, not 48 (12 MP JPEG: 36 -> 33 ms)
            for pipe in (self._proc.stdin, self._proc.stdout):
                with contextlib.suppress(OSError):  # over /proc/sys/fs/pipe-max-size: the default still works
                    fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        try:
            if _read_exact(self._proc.stdout.fileno(), 1, time.monotonic() + START_TIMEOUT_S) != _READY:
                raise EOFError
        except (EOFError, TimeoutError, OSError) as exc:
            code = self._stop()
            raise DecoderUnavailable(f"the decoding process did not start (exit status {code}); the worker may be "
                                     "short of memory") from exc
        log.debug("decoding process %d started", self._proc.pid)

    def _send(self, request: bytes, data: bytes) -> None:
        pipe = self._proc.stdin
        pipe.write(_HEADER.pack(len(request)) + request)
        pipe.write(data)
        pipe.flush()

    def _receive(self, deadline: float) -> bytes:
        fd = self._proc.stdout.fileno()
        (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
        return _read_exact(fd, size, deadline)

    def _stop(self) -> int | None:
        """Kill the child (if it still runs) and reap it; returns its exit status."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
        code = proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        return code

    def close(self) -> None:
        with self._lock:
            self._stop()

    def __enter__(self) -> "Decoder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_shared: dict[tuple, Decoder] = {}
_shared_lock = threading.Lock()


def shared(formats: Sequence[str], max_pixels: int, timeout_s: float, memory_mb: int) -> Decoder:
    """One decoder per worker process and settings, kept between batches so the child starts once."""
    key = (tuple(formats), max_pixels, timeout_s, memory_mb)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = Decoder(formats, max_pixels, timeout_s, memory_mb)
        return _shared[key]


def _read_exact(fd: int, n: int, deadline: float) -> bytes:
    chunks = []
    while n:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise TimeoutError
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _address_space() -> int:
    """Bytes of address space this process maps now (VmSize)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _reply(out, value) -> None:
    reply = pickle.dumps(value)
    out.write(_HEADER.pack(len(reply)) + reply)
    out.flush()


def _video(out, timeout_s: float, uri: str, options: dict, sizes, frames, plan: VideoPlan, skip: frozenset[int],
           listed_bytes: int | None):
    """Open the video through fsspec, tell the parent how many segments it will decode, then decode them."""
    handle = open_video(uri, options, listed_bytes)
    if isinstance(handle, DecodeFailure):
        return handle
    with handle as file:
        opened = probe(file, plan)
        if isinstance(opened, DecodeFailure):
            return opened
        container, stream, duration = opened
        todo = max(1, len(segment_bounds(duration, plan.segment_s)) - len(skip))
        _reply(out, todo)
        signal.setitimer(signal.ITIMER_REAL, timeout_s * todo)
        # The frames it returns, held twice (arrays, then their pickle), grow the cap until the reply is sent.
        frame_bytes = sum(n * r.height * r.width * 3 for n, r in zip(frames, sizes))
        _cap_address_space(resource.getrlimit(resource.RLIMIT_AS)[0] + 2 * todo * frame_bytes)
        return decode_video(container, stream, duration, sizes, frames, plan, skip)


def _cap_address_space(limit: int) -> None:
    """Set the soft address-space cap (never above the hard one)."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))


def _serve(memory_mb: int, timeout_s: float) -> None:
    """The child's loop: read a request, decode under the timer, answer; exit when the parent hangs up."""
    import av  # noqa: F401  (mapped before the memory cap is measured, as Pillow is)
    from PIL import Image

    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the replies
    source = sys.stdin.buffer
    cap = _address_space() + memory_mb * 2**20
    _cap_address_space(cap)
    out.write(_READY)
    out.flush()
    while header := source.read(_HEADER.size):
        (size,) = _HEADER.unpack(header)
        kind, args, length = pickle.loads(source.read(size))
        data = source.read(length)
        signal.setitimer(signal.ITIMER_REAL, timeout_s)  # SIGALRM's default action ends us, even inside C code
        try:
            if kind == "video":
                result = _video(out, timeout_s, *args)
            else:
                sizes, formats, max_pixels = args
                Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow's own bomb check then agrees with ours
                result = decode(data, sizes, formats=formats, max_pixels=max_pixels)
        except BaseException as exc:  # a bug, not the file: still this file's error, and the child lives on
            result = DecodeFailure("decode_error", f"{type(exc).__name__}: {exc}")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        del data
        _reply(out, result)
        del result  # a video's frames go before its allowance does
        _cap_address_space(cap)


if __name__ == "__main__":
    _serve(int(sys.argv[1]), float(sys.argv[2]))
