import io

import numpy as np
from PIL import Image

from captioner import images
from captioner.images import Resize
from conftest import jpeg_bytes


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def test_jpeg_resized_to_model_input_with_original_size_kept():
    result = images.decode(jpeg_bytes(0, size=(640, 480)), [Resize(32, 48)])
    assert isinstance(result, images.Decoded)
    assert result.pixels[0].shape == (32, 48, 3) and result.pixels[0].dtype == np.uint8
    assert (result.width, result.height) == (640, 480)


def test_draft_decoding_keeps_the_picture():
    """A large flat-red JPEG decoded through draft mode is still red at the target size."""
    data = _encode(Image.new("RGB", (2000, 1500), (200, 10, 10)), "JPEG", quality=95)
    result = images.decode(data, [Resize(64, 64)])
    assert np.abs(result.pixels[0].astype(int) - [200, 10, 10]).max() < 8


def test_exif_orientation_applied():
    img = Image.new("RGB", (80, 40), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 40, 40))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    result = images.decode(_encode(img, "JPEG", exif=exif, quality=95), [Resize(40, 40)])
    assert (result.width, result.height) == (40, 80)
    top, bottom = result.pixels[0][:10].mean(), result.pixels[0][-10:].mean()
    assert top > 200 and bottom < 50  # the white half is on top after rotation


def test_transparency_composited_on_white():
    img = Image.new("RGBA", (16, 16), (255, 0, 0, 0))
    result = images.decode(_encode(img, "PNG"), [Resize(8, 8)])
    assert (result.pixels[0] == 255).all()


def test_grayscale_and_palette_become_rgb():
    for mode in ("L", "P", "CMYK"):
        fmt = "JPEG" if mode == "CMYK" else "PNG"
        result = images.decode(_encode(Image.new(mode, (10, 10)), fmt), [Resize(4, 4)])
        assert result.pixels[0].shape == (4, 4, 3)


def test_bad_inputs_are_values_not_exceptions():
    cases = {
        b"": "empty",
        b"plain text, not an image": "not_an_image",
        jpeg_bytes(1)[:300]: "truncated",
    }
    for data, kind in cases.items():
        result = images.decode(data, [Resize(8, 8)])
        assert isinstance(result, images.DecodeFailure), kind
        assert result.error_type == kind and result.message


def test_one_decode_serves_several_models():
    """A stretch to the captioner's square and a CLIP-style short-side scale plus centre crop."""
    img = Image.new("RGB", (200, 100), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 30, 100))  # a red band at the left: cropped away by a centre crop
    result = images.decode(_encode(img, "PNG"), [Resize(20, 20), Resize(10, 10, crop=True)])
    stretched, cropped = result.pixels
    assert stretched.shape == (20, 20, 3) and stretched[:, 0, 0].min() > 200  # red stays at the left edge
    assert cropped.shape == (10, 10, 3) and cropped[..., 0].max() < 30  # all blue after the crop
