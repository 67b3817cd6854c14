"""Pure decoding: bytes in, an RGB uint8 array at the model's input size out, or an error value.

Nothing here raises for bad input: a file that is not an image, truncated or too large becomes a
``DecodeFailure`` that the pipeline writes as an error row.
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


@dataclass(frozen=True)
class Resize:
    """How a model's image processor sizes its input."""

    height: int
    width: int
    crop: bool = False  # False: stretch to height x width; True: scale the short side, then centre-crop
    resample: int = Image.Resampling.BILINEAR


@dataclass(frozen=True)
class Decoded:
    pixels: tuple[np.ndarray, ...]  # one (height, width, 3) uint8 array per requested Resize
    width: int  # original size, after EXIF orientation
    height: int


@dataclass(frozen=True)
class DecodeFailure:
    error_type: str  # empty | not_an_image | truncated | too_large | decode_error
    message: str


def decode(data: bytes, sizes: Sequence[Resize]) -> Decoded | DecodeFailure:
    """Decode ``data`` once and resize it for each model, with cheap JPEG draft decoding."""
    if not data:
        return DecodeFailure("empty", "file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _decode(data, sizes)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return DecodeFailure("too_large", str(exc))
    except UnidentifiedImageError:
        return DecodeFailure("not_an_image", "content is not an image format Pillow can read")
    except OSError as exc:
        kind = "truncated" if "truncated" in str(exc).lower() else "decode_error"
        return DecodeFailure(kind, f"{type(exc).__name__}: {exc}")
    except (ValueError, SyntaxError, EOFError) as exc:
        return DecodeFailure("decode_error", f"{type(exc).__name__}: {exc}")


def _decode(data: bytes, sizes: Sequence[Resize]) -> Decoded:
    with Image.open(io.BytesIO(data)) as img:
        orig_w, orig_h = img.size
        if img.getexif().get(_ORIENTATION_TAG) in _TRANSPOSED:
            orig_w, orig_h = orig_h, orig_w
        # JPEG only: let libjpeg decode at 1/2, 1/4 or 1/8 scale while staying at least the largest size.
        img.draft("RGB", (max(s.width for s in sizes), max(s.height for s in sizes)))
        img = _to_rgb(ImageOps.exif_transpose(img))
        pixels = tuple(np.asarray(_resize(img, size), dtype=np.uint8) for size in sizes)
    return Decoded(pixels=pixels, width=orig_w, height=orig_h)


def _resize(img: Image.Image, size: Resize) -> Image.Image:
    if not size.crop:
        return img.resize((size.width, size.height), size.resample)
    scale = max(size.width, size.height) / min(img.size)
    scaled = img.resize((max(size.width, round(img.width * scale)), max(size.height, round(img.height * scale))),
                        size.resample)
    left, top = (scaled.width - size.width) // 2, (scaled.height - size.height) // 2
    return scaled.crop((left, top, left + size.width, top + size.height))


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB, with any transparency composited on white so transparent pixels do not turn black."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")
