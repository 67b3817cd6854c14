import torch
from PIL import Image
from transformers import AutoImageProcessor

from conftest import normalised


def test_device_normalisation_matches_the_image_processor(captioner, tiny_model, pixels):
    processor = AutoImageProcessor.from_pretrained(tiny_model)
    expected = processor(images=[Image.fromarray(p) for p in pixels], return_tensors="pt").pixel_values
    torch.testing.assert_close(normalised(captioner, pixels), expected, atol=1e-5, rtol=0)
