"""What a model wants of an image, and turning decoded uint8 batches into its input on the device."""

import numpy as np
import torch

from ..media.image import ImageSpec, Resize


def image_spec(processor) -> ImageSpec:
    """The preprocessing a transformers image processor applies, as plain numbers the decode stage can use.

    Two resize rules batch: a fixed height x width (ViT, BLIP), or the short side scaled then a centre crop
    (CLIP, GIT, VideoMAE). Anything else raises ValueError, before any image is read.
    """
    size = processor.size if not isinstance(processor.size, int) else {"height": processor.size, "width": processor.size}
    crop = processor.crop_size if getattr(processor, "do_center_crop", False) else None  # dict-like, or None
    resample = int(processor.resample)
    if not getattr(processor, "do_resize", True):
        raise ValueError("its image processor does not resize, so images of different sizes cannot be batched")
    if size.get("shortest_edge") and crop:
        resize = Resize(crop["height"], crop["width"], crop=True, resample=resample, short_side=size["shortest_edge"])
    elif size.get("height") and size.get("width"):
        if crop and (crop["height"], crop["width"]) != (size["height"], size["width"]):
            raise ValueError(f"its image processor resizes to {size} and then crops to {crop}; not supported")
        resize = Resize(size["height"], size["width"], resample=resample)
    else:
        raise ValueError(f"its image processor resizes to {size} without a crop, so sizes vary by image")
    return ImageSpec(resize=resize, **normalisation(processor))


def normalisation(processor) -> dict:
    """An image processor's rescale, mean and std as ``ImageSpec`` takes them; a step it skips is the identity."""
    normalize = getattr(processor, "do_normalize", True)
    return {"mean": tuple(processor.image_mean) if normalize else (0.0, 0.0, 0.0),
            "std": tuple(processor.image_std) if normalize else (1.0, 1.0, 1.0),
            "rescale": float(processor.rescale_factor) if getattr(processor, "do_rescale", True) else 1.0}


def pixel_values(pixels: np.ndarray, spec: ImageSpec, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """uint8 (B, [F,] H, W, 3) -> normalised (B, [F,] 3, H, W) on the device: normalising there keeps transfers
    small."""
    x = torch.from_numpy(np.require(pixels, requirements=["C", "W"])).to(device, non_blocking=True)
    x = x.movedim(-1, -3).to(dtype) * spec.rescale  # (B, [F,] 3, H, W)
    mean = torch.tensor(spec.mean, device=device, dtype=dtype).view(3, 1, 1)
    std = torch.tensor(spec.std, device=device, dtype=dtype).view(3, 1, 1)
    return (x - mean) / std
