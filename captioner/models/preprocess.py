"""What a model wants of an image, and turning decoded uint8 batches into its input on the device."""

from dataclasses import dataclass

import numpy as np
import torch

from ..media.image import Resize


@dataclass(frozen=True)
class ImageSpec:
    """What the decode stage and the device need to know of a model's image processor."""

    resize: Resize
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale: float  # multiplies uint8 pixels before normalising (1/255 for ViT)


def image_spec(processor) -> ImageSpec:
    """The preprocessing a transformers image processor applies, as plain numbers the decode stage can use."""
    size = processor.size
    crop = getattr(processor, "do_center_crop", False) and getattr(processor, "crop_size", None)
    if crop:
        resize = Resize(crop["height"], crop["width"], crop=True, resample=processor.resample)
    elif isinstance(size, int):
        resize = Resize(size, size, resample=processor.resample)
    elif size.get("height"):
        resize = Resize(size["height"], size["width"], resample=processor.resample)
    else:
        resize = Resize(size["shortest_edge"], size["shortest_edge"], resample=processor.resample)
    normalize = getattr(processor, "do_normalize", True)
    mean = tuple(processor.image_mean) if normalize else (0.0, 0.0, 0.0)
    std = tuple(processor.image_std) if normalize else (1.0, 1.0, 1.0)
    rescale = processor.rescale_factor if getattr(processor, "do_rescale", True) else 1.0
    return ImageSpec(resize=resize, mean=mean, std=std, rescale=float(rescale))


def pixel_values(pixels: np.ndarray, spec: ImageSpec, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> normalised (B, 3, H, W) on the device: normalising there keeps transfers small."""
    x = torch.from_numpy(np.require(pixels, requirements=["C", "W"])).to(device, non_blocking=True)
    x = x.permute(0, 3, 1, 2).to(dtype) * spec.rescale  # (B, 3, H, W)
    mean = torch.tensor(spec.mean, device=device, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device, dtype=dtype).view(1, 3, 1, 1)
    return (x - mean) / std
