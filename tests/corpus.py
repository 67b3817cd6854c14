"""A generated corpus of malformed and unusual image files, each kind with the outcome a run must record."""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import jpeg_bytes

OVERSIZED_BYTES = 3 * 2**30  # sparse on disk: listed at 3 GiB, never read


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming ``width`` x ``height``, then a few bytes of pixel data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _gradient16(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 65535, (24, 32), dtype=np.uint16))  # mode I;16


def _palette_with_transparency(seed: int) -> bytes:
    img = Image.new("P", (32, 24), 1)
    img.putpalette([0, 0, 0, (seed * 40) % 256, 200, 30] + [0] * 762)
    img.paste(0, (0, 0, 16, 24))
    return _encode(img, "PNG", transparency=0)


def _animated_gif(seed: int) -> bytes:
    frames = [Image.new("RGB", (32, 24), ((seed * 13) % 256, 0, 0)), Image.new("RGB", (32, 24), (0, 0, 255))]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _exif_rotated(seed: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(Image.open(io.BytesIO(jpeg_bytes(seed, size=(40, 20)))), "JPEG", exif=exif)


EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\n"
       b"newpath 0 0 moveto 10 10 lineto stroke\nshowpage\n%%EOF\n")

# kind -> (file name suffix, bytes for the i-th file, the error type a run records; None: captioned)
KINDS = {
    "good": (".jpg", lambda i: jpeg_bytes(i), None),
    "truncated": (".jpg", lambda i: jpeg_bytes(i)[:300], "truncated"),
    "empty": (".jpg", lambda i: b"", "empty"),
    "text": (".jpg", lambda i: f"not a picture, line {i}\n".encode(), "not_an_image"),
    "cmyk": (".jpg", lambda i: _encode(Image.new("CMYK", (32, 24), (0, 255, 255, i)), "JPEG"), None),
    "png16": (".png", lambda i: _encode(_gradient16(i), "PNG"), None),
    "tiff16": (".tif", lambda i: _encode(_gradient16(i), "TIFF"), None),
    "palette_trns": (".png", _palette_with_transparency, None),
    "la": (".png", lambda i: _encode(Image.new("LA", (32, 24), (i, 128)), "PNG"), None),
    "rgba_webp": (".webp", lambda i: _encode(Image.new("RGBA", (32, 24), (255, i, 0, 100)), "WEBP"), None),
    "animated": (".gif", _animated_gif, None),
    "exif_rotated": (".jpg", _exif_rotated, None),
    "bmp": (".bmp", lambda i: _encode(Image.new("RGB", (32, 24), (i, 60, 90)), "BMP"), None),
    "bomb": (".png", lambda i: _png_header(60_000 + i, 60_000), "too_many_pixels"),
    "eps": (".jpg", lambda i: EPS, "unsupported_format"),
    "zero_dim": (".png", lambda i: _png_header(0, 24 + i), "decode_error"),
    "oversized": (".jpg", None, "too_large"),
    # Names that are legal on disk but hostile to careless path handling: dots, unicode, control-ish, long.
    "odd_names": ("", lambda i: jpeg_bytes(1000 + i), None),
}
ODD_STEMS = ["..", "...", " leading space", "trailing space ", "\u202etxt.exe", "ünïcödé-名前", "emoji-😀",
             "new\nline", "tab\tname", "%2e%2e%2f", "back\\slash", "-dash", "x" * 200, "semi;colon", "quote'\"",
             "dollar$HOME", "star*", "q?mark", "hash#frag", "amp&and"]


def write(folder: Path, per_kind: int = 20) -> dict[Path, str | None]:
    """Write ``per_kind`` files of every kind under ``folder``; returns each path's expected error type."""
    expected = {}
    for kind, (suffix, make, outcome) in KINDS.items():
        sub = folder / kind
        sub.mkdir(parents=True)
        for i in range(per_kind):
            path = sub / (f"{ODD_STEMS[i % len(ODD_STEMS)]}-{i}.jpg" if kind == "odd_names" else f"{kind}{i:02d}{suffix}")
            if make is None:
                with open(path, "wb") as f:
                    f.truncate(OVERSIZED_BYTES)
            else:
                path.write_bytes(make(i))
            expected[path] = outcome
    return expected
