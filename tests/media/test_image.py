import io

import numpy as np
from PIL import Image

from captioner.media import image as images
from captioner.config import DecodeConfig
from captioner.media.image import Resize
from conftest import jpeg_bytes

LIMITS = DecodeConfig()


def _decode(data: bytes, sizes, **limits):
    """``images.decode`` with the run's default formats and pixel cap unless a test says otherwise."""
    limits = {"formats": LIMITS.formats, "max_pixels": LIMITS.max_pixels, **limits}
    return images.decode(data, sizes, **limits)


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def test_jpeg_resized_to_model_input_with_original_size_kept():
    result = _decode(jpeg_bytes(0, size=(640, 480)), [Resize(32, 48)])
    assert isinstance(result, images.Decoded)
    assert result.pixels[0].shape == (32, 48, 3) and result.pixels[0].dtype == np.uint8
    assert (result.width, result.height) == (640, 480)


def test_draft_decoding_keeps_the_picture():
    """A large flat-red JPEG decoded through draft mode is still red at the target size."""
    data = _encode(Image.new("RGB", (2000, 1500), (200, 10, 10)), "JPEG", quality=95)
    result = _decode(data, [Resize(64, 64)])
    assert np.abs(result.pixels[0].astype(int) - [200, 10, 10]).max() < 8


def test_exif_orientation_applied():
    img = Image.new("RGB", (80, 40), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 40, 40))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    result = _decode(_encode(img, "JPEG", exif=exif, quality=95), [Resize(40, 40)])
    assert (result.width, result.height) == (40, 80)
    top, bottom = result.pixels[0][:10].mean(), result.pixels[0][-10:].mean()
    assert top > 200 and bottom < 50  # the white half is on top after rotation


def test_transparency_composited_on_white():
    img = Image.new("RGBA", (16, 16), (255, 0, 0, 0))
    result = _decode(_encode(img, "PNG"), [Resize(8, 8)])
    assert (result.pixels[0] == 255).all()


def test_grayscale_and_palette_become_rgb():
    for mode in ("L", "P", "CMYK"):
        fmt = "JPEG" if mode == "CMYK" else "PNG"
        result = _decode(_encode(Image.new(mode, (10, 10)), fmt), [Resize(4, 4)])
        assert result.pixels[0].shape == (4, 4, 3)


def test_bad_inputs_are_values_not_exceptions():
    cases = {
        b"": "empty",
        b"plain text, not an image": "not_an_image",
        jpeg_bytes(1)[:300]: "truncated",
    }
    for data, kind in cases.items():
        result = _decode(data, [Resize(8, 8)])
        assert isinstance(result, images.DecodeFailure), kind
        assert result.error_type == kind and result.message


def test_one_decode_serves_several_models():
    """A stretch to the captioner's square and a CLIP-style short-side scale plus centre crop."""
    img = Image.new("RGB", (200, 100), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 30, 100))  # a red band at the left: cropped away by a centre crop
    result = _decode(_encode(img, "PNG"), [Resize(20, 20), Resize(10, 10, crop=True)])
    stretched, cropped = result.pixels
    assert stretched.shape == (20, 20, 3) and stretched[:, 0, 0].min() > 200  # red stays at the left edge
    assert cropped.shape == (10, 10, 3) and cropped[..., 0].max() < 30  # all blue after the crop


def test_every_corpus_kind_decodes_or_fails_as_expected():
    """One of each kind from the malformed corpus, decoded in this process: never an exception."""
    import corpus

    for kind, (_, make, outcome) in corpus.KINDS.items():
        if make is None:
            continue  # oversized files are refused before reading; see test_stages
        for i in (0, 7):
            result = _decode(make(i), [Resize(16, 16)])
            if outcome is None:
                assert isinstance(result, images.Decoded), (kind, result)
                assert result.pixels[0].shape == (16, 16, 3)
            else:
                assert isinstance(result, images.DecodeFailure) and result.error_type == outcome, (kind, result)
                assert result.message


def test_sixteen_bit_grey_is_scaled_not_clipped():
    ramp = np.linspace(0, 65535, 64, dtype=np.uint16)[None, :].repeat(8, axis=0)
    for fmt in ("PNG", "TIFF"):
        img = Image.fromarray(ramp)
        assert img.mode == "I;16"
        pixels = _decode(_encode(img, fmt), [Resize(8, 64)]).pixels[0].astype(int)
        assert pixels[:, 0].max() < 10 and pixels[:, -1].min() > 245, fmt  # black to white, not all white
        assert abs(pixels[:, 32].mean() - 128) < 12, fmt


def test_sixteen_bit_transparent_grey_is_composited():
    img = Image.fromarray(np.array([[0, 40000]] * 4, dtype=np.uint16))
    result = _decode(_encode(img, "PNG", transparency=0), [Resize(4, 2)])
    assert (result.pixels[0][:, 0] == 255).all()  # the transparent level shows the white background
    assert abs(int(result.pixels[0][0, 1, 0]) - 40000 // 257) <= 2


def test_palette_transparency_la_and_rgba_webp_on_white():
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    palette.paste(1, (4, 0, 8, 8))
    cases = {
        "P": (_encode(palette, "PNG", transparency=0), [255, 255, 255], [0, 0, 255]),
        "LA": (_encode(Image.new("LA", (8, 8), (0, 0)), "PNG"), [255, 255, 255], [255, 255, 255]),
        "RGBA": (_encode(Image.new("RGBA", (8, 8), (255, 0, 0, 255)), "WEBP", lossless=True), [255, 0, 0],
                 [255, 0, 0]),
    }
    for mode, (data, left, right) in cases.items():
        pixels = _decode(data, [Resize(8, 8)]).pixels[0].astype(int)
        assert np.abs(pixels[:, :3] - left).max() < 8, mode
        assert np.abs(pixels[:, 5:] - right).max() < 8, mode


def test_cmyk_jpeg_keeps_its_colour_and_animations_give_the_first_frame():
    red = _encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)
    assert np.abs(_decode(red, [Resize(4, 4)]).pixels[0].astype(int) - [255, 0, 0]).max() < 10
    frames = [Image.new("RGB", (8, 8), (0, 200, 0)), Image.new("RGB", (8, 8), (200, 0, 0))]
    gif = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert np.abs(_decode(gif, [Resize(4, 4)]).pixels[0].astype(int) - [0, 200, 0]).max() < 10


def test_pixel_count_is_checked_from_the_header_before_decoding():
    import corpus

    bomb = corpus._png_header(9_000, 9_000)  # 81 million pixels in 70 bytes
    result = _decode(bomb, [Resize(8, 8)], max_pixels=10_000_000)
    assert result.error_type == "too_many_pixels" and "9000x9000" in result.message
    big = _encode(Image.new("L", (200, 100)), "PNG")
    assert _decode(big, [Resize(8, 8)], max_pixels=19_999).error_type == "too_many_pixels"
    assert isinstance(_decode(big, [Resize(8, 8)], max_pixels=20_000), images.Decoded)
    # Above our own cap, Pillow's DecompressionBombWarning (over ~89 MP) still counts as a failure.
    warned = _decode(corpus._png_header(10_000, 10_000), [Resize(8, 8)], max_pixels=10**12)
    assert warned.error_type == "too_many_pixels" and "decompression bomb" in warned.message


def test_only_the_listed_formats_are_tried():
    import corpus

    assert Image.open(io.BytesIO(corpus.EPS)).format == "EPS"  # Pillow alone would take it (and run Ghostscript)
    eps = _decode(corpus.EPS, [Resize(8, 8)])
    assert eps.error_type == "unsupported_format" and "PostScript" in eps.message
    ppm = _encode(Image.new("RGB", (8, 8), (1, 2, 3)), "PPM")
    assert _decode(ppm, [Resize(4, 4)]).error_type == "not_an_image"
    assert isinstance(_decode(ppm, [Resize(4, 4)], formats=("PPM",)), images.Decoded)
    png = _encode(Image.new("RGB", (8, 8)), "PNG")
    refused = _decode(png, [Resize(4, 4)], formats=("JPEG",))
    assert refused.error_type == "unsupported_format" and "PNG" in refused.message
