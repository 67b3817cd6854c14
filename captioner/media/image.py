"""Pure decoding: bytes in, an RGB uint8 array at the model's input size out, or an error value.

Nothing here raises for bad input: a file that is not an image, truncated, in a format we refuse, or with a
header asking for too many pixels becomes a ``DecodeFailure`` that the pipeline writes as an error row.
Only the formats the caller lists are tried (Pillow's EPS plugin, for one, would run Ghostscript), and the
pixel count is checked from the header before any pixel is decoded. Time and memory are bounded one level
up, in ``sandbox``: a C decoder stuck in a loop cannot be stopped from inside its own process.
"""

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# EXIF orientations that swap width and height.
_TRANSPOSED = {5, 6, 7, 8}
_ORIENTATION_TAG = 0x0112
# Formats recognised by their first bytes only to say why they are refused: decoding them runs other programs.
_REFUSED_MAGIC = {b"%!PS": "PostScript/EPS", b"\xc5\xd0\xd3\xc6": "PostScript/EPS", b"%PDF": "PDF"}
# First bytes of common formats, to tell a damaged header from a file that is no image at all.
_MAGIC = {b"\x89PNG": "PNG", b"\xff\xd8": "JPEG", b"GIF8": "GIF", b"BM": "BMP", b"II*\x00": "TIFF",
          b"MM\x00*": "TIFF", b"RIFF": "WEBP"}


@dataclass(frozen=True)
class Resize:
    """How a model's image processor sizes its input: stretch to height x width, or scale the short side to
    ``short_side`` (keeping the aspect ratio) and centre-crop height x width. A stretch may follow a first resize
    of the long side to ``long_side`` (keeping the aspect ratio), as SmolVLM's processor does to one tile."""

    height: int
    width: int
    crop: bool = False  # False: stretch to height x width; True: scale the short side, then centre-crop
    resample: int = Image.Resampling.BILINEAR
    short_side: int | None = None  # with crop: the short side before cropping (default: the larger of height, width)
    long_side: int | None = None  # without crop: the long side of a first resize before the stretch (None: none)


@dataclass(frozen=True)
class ImageSpec:
    """What the decode stage and the device need to know of a model's image processor."""

    resize: Resize
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale: float  # multiplies uint8 pixels before normalising (1/255 for ViT)
    frames: int = 1  # frames per caption: more for a model that captions a clip from several (GIT on VATEX)


@dataclass(frozen=True)
class Decoded:
    pixels: tuple[np.ndarray, ...]  # one (height, width, 3) uint8 array per requested Resize
    width: int  # original size, after EXIF orientation
    height: int


@dataclass(frozen=True)
class DecodeFailure:
    # empty | not_an_image | unsupported_format | truncated | too_many_pixels | out_of_memory | decode_error
    # (and, from the layers above: too_large, timeout, decoder_crashed)
    error_type: str
    message: str


def decode(data: bytes, sizes: Sequence[Resize], *, formats: Sequence[str], max_pixels: int) -> Decoded | DecodeFailure:
    """Decode ``data`` once and resize it for each model, with cheap JPEG draft decoding.

    ``formats`` are Pillow format ids (JPEG, PNG...) to try; ``max_pixels`` caps width x height as the header
    states it. Pillow's own DecompressionBombWarning counts as a failure too.
    """
    if not data:
        return DecodeFailure("empty", "file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _decode(data, sizes, formats, max_pixels)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return DecodeFailure("too_many_pixels", str(exc))
    except UnidentifiedImageError:
        refused = next((name for magic, name in _REFUSED_MAGIC.items() if data.startswith(magic)), None)
        if refused:
            return DecodeFailure("unsupported_format", f"{refused} is never decoded: it needs an external interpreter")
        looks = next((name for magic, name in _MAGIC.items() if data.startswith(magic)), None)
        if looks in formats:
            return DecodeFailure("decode_error", f"starts like {looks} but its header cannot be read")
        if looks:
            return DecodeFailure("unsupported_format", f"{looks} is not among the accepted formats (--image-formats)")
        return DecodeFailure("not_an_image", f"content is not an image in an accepted format ({', '.join(formats)})")
    except MemoryError:
        return DecodeFailure("out_of_memory", "decoding needs more memory than allowed (--decode-memory-cap-mb)")
    except OSError as exc:
        kind = "truncated" if "truncated" in str(exc).lower() else "decode_error"
        return DecodeFailure(kind, f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # hostile headers reach odd corners of the decoders (struct.error, KeyError...)
        return DecodeFailure("decode_error", f"{type(exc).__name__}: {exc}")


def _decode(data: bytes, sizes: Sequence[Resize], formats: Sequence[str], max_pixels: int) -> Decoded | DecodeFailure:
    with Image.open(io.BytesIO(data), formats=list(formats)) as img:
        orig_w, orig_h = img.size
        if orig_w < 1 or orig_h < 1:
            return DecodeFailure("decode_error", f"header says the image is {orig_w}x{orig_h} pixels")
        if orig_w * orig_h > max_pixels:
            return DecodeFailure("too_many_pixels", f"header says {orig_w}x{orig_h} = {orig_w * orig_h:,} pixels, "
                                 f"more than the limit of {max_pixels:,} (--max-image-pixels)")
        if img.getexif().get(_ORIENTATION_TAG) in _TRANSPOSED:
            orig_w, orig_h = orig_h, orig_w
        # JPEG only: let libjpeg decode at 1/2, 1/4 or 1/8 scale while staying at least the largest first resize.
        firsts = [_long_side(*img.size, s.long_side) if s.long_side else (s.width, s.height) for s in sizes]
        img.draft("RGB", (max(w for w, _ in firsts), max(h for _, h in firsts)))
        rgb = _to_rgb(ImageOps.exif_transpose(img))  # the first frame of an animation
        pixels = tuple(np.asarray(resize(rgb, size), dtype=np.uint8) for size in sizes)
    return Decoded(pixels=pixels, width=orig_w, height=orig_h)


def resize(img: Image.Image, size: Resize) -> Image.Image:
    """The image processors' own arithmetic: the long side truncated, the crop's offsets floored."""
    if not size.crop:
        if size.long_side:
            img = img.resize(_long_side(img.width, img.height, size.long_side), size.resample)
        return img.resize((size.width, size.height), size.resample)
    short = size.short_side or max(size.width, size.height)
    if img.width <= img.height:
        scaled = (short, int(short * img.height / img.width))
    else:
        scaled = (int(short * img.width / img.height), short)
    resized = img.resize(scaled, size.resample)
    left, top = (resized.width - size.width) // 2, (resized.height - size.height) // 2
    return resized.crop((left, top, left + size.width, top + size.height))


def _long_side(width: int, height: int, long_side: int) -> tuple[int, int]:
    """(width, height) with the long side at ``long_side``: the other side truncated, then rounded up to even."""
    if width >= height:
        other = int(long_side / (width / height))
        return long_side, max(other + other % 2, 1)
    other = int(long_side * (width / height))
    return max(other + other % 2, 1), long_side


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB from any mode: transparency composited on white (so transparent pixels do not turn black),
    16-bit and 32-bit samples scaled to 8 bits (not clipped to white)."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        img = _to_8bit(img)
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _to_8bit(img: Image.Image) -> Image.Image:
    """Grey levels of a 16-bit, 32-bit or float image as 8-bit "L"; transparency is kept as an alpha band."""
    values = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        values = values * 255.0 if values.size and values.max() <= 1.0 else values
    elif img.mode.startswith("I;16") or (values.size and values.max() > 255):
        values = values / 257.0  # 0..65535 -> 0..255
    grey = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    if "transparency" in img.info and isinstance(img.info["transparency"], int):
        level = img.info["transparency"]
        alpha = np.where(np.asarray(img) == level, 0, 255).astype(np.uint8)
        return Image.merge("LA", (grey, Image.fromarray(alpha, "L")))
    return grey
