"""The optimizer, its learning-rate schedule and mixed precision, shared by captioner and encoder training.

Both loops take the same update step, so a fix to it (clipping, the fp16 scaler) reaches both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from .config import TrainConfig


def adamw(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over every parameter (frozen ones get no gradient, so no update), decaying matrices only."""
    params = list(model.parameters())
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.98))


def lr_schedule(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to the peak rate, then a cosine down to a tenth of it at `total_steps`."""
    return get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, num_warmup_steps=config.warmup_steps, num_training_steps=total_steps, min_lr_rate=0.1
    )


def autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 on CUDA where supported, else fp16; None (fp32) on CPU or when mixed precision is off."""
    if device.type != "cuda" or not config.mixed_precision:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to `dtype`, or nothing at all in fp32."""
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A loss scaler that is active only for fp16, whose gradients would otherwise underflow."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def update(
    loss: torch.Tensor,
    params: Iterable[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    grad_clip: float,
) -> None:
    """One optimizer step on `loss`: backward through the scaler, clip the global norm of `params`, step."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
