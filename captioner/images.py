"""Pure decoding: bytes in, an RGB uint8 array at the model's input size out, or an error value.

Nothing here raises for bad input: a file that is not an image, truncated or too large becomes a
``DecodeFailure`` that the pipeline writes as an error row.
"""

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# EXIF orientations that swap width and height.
_TRANSPOSED = {5, 6, 7, 8}
_ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class Decoded:
    pixels: np.ndarray  # (height, width, 3) uint8 at the requested size
    width: int  # original size, after EXIF orientation
    height: int


@dataclass(frozen=True)
class DecodeFailure:
    error_type: str  # empty | not_an_image | truncated | too_large | decode_error
    message: str


def decode(data: bytes, size: tuple[int, int]) -> Decoded | DecodeFailure:
    """Decode ``data`` and resize it to ``size`` = (height, width), with cheap JPEG draft decoding."""
    if not data:
        return DecodeFailure("empty", "file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _decode(data, size)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return DecodeFailure("too_large", str(exc))
    except UnidentifiedImageError:
        return DecodeFailure("not_an_image", "content is not an image format Pillow can read")
    except OSError as exc:
        kind = "truncated" if "truncated" in str(exc).lower() else "decode_error"
        return DecodeFailure(kind, f"{type(exc).__name__}: {exc}")
    except (ValueError, SyntaxError, EOFError) as exc:
        return DecodeFailure("decode_error", f"{type(exc).__name__}: {exc}")


def _decode(data: bytes, size: tuple[int, int]) -> Decoded:
    height, width = size
    with Image.open(io.BytesIO(data)) as img:
        orig_w, orig_h = img.size
        if img.getexif().get(_ORIENTATION_TAG) in _TRANSPOSED:
            orig_w, orig_h = orig_h, orig_w
        # JPEG only: let libjpeg decode at 1/2, 1/4 or 1/8 scale while staying at least ``size``.
        img.draft("RGB", (width, height))
        img = ImageOps.exif_transpose(img)
        img = _to_rgb(img)
        img = img.resize((width, height), Image.Resampling.BILINEAR)
        pixels = np.asarray(img, dtype=np.uint8)
    return Decoded(pixels=pixels, width=orig_w, height=orig_h)


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB, with any transparency composited on white so transparent pixels do not turn black."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")
