"""Resumable checkpoints: a rerun of an interrupted run continues where the last complete one left off.

Each checkpoint is a folder step-NNNNNNNN with the weights in safetensors, the optimizer, schedule
and gradient-scaler state, and state.json (step and metrics history), written last and renamed
into place, so a folder without state.json is a torn write and is ignored.
"""

from __future__ import annotations

import json
import logging
import os
import shutil

import torch
from transformers import VisionEncoderDecoderModel

from .config import TrainConfig

logger = logging.getLogger(__name__)


def latest_checkpoint(directory: str) -> str | None:
    """The newest complete checkpoint: its state.json is written last, so a torn one is ignored."""
    if not os.path.isdir(directory):
        return None
    done = [
        d for d in os.listdir(directory)
        if d.startswith("step-") and os.path.exists(os.path.join(directory, d, "state.json"))
    ]
    return os.path.join(directory, max(done)) if done else None


def last_metrics(directory: str) -> dict[str, float]:
    """The last epoch's metrics, as the newest checkpoint recorded them."""
    with open(os.path.join(latest_checkpoint(directory), "state.json")) as f:
        return json.load(f)["history"][-1]


def save_checkpoint(
    config: TrainConfig,
    model: VisionEncoderDecoderModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    step: int,
    history: list[dict[str, float]],
) -> str:
    """Write weights (safetensors) and optimizer state to a temporary folder, then rename it into place."""
    final = os.path.join(config.checkpoints, f"step-{step:08d}")
    partial = final + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict()},
        os.path.join(partial, "trainer_state.pt"),
    )
    with open(os.path.join(partial, "state.json"), "w") as f:
        json.dump({"step": step, "history": history}, f)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    done = sorted(d for d in os.listdir(config.checkpoints) if d.startswith("step-") and not d.endswith(".partial"))
    for old in done[: -config.keep_checkpoints]:
        shutil.rmtree(os.path.join(config.checkpoints, old))
    logger.info("checkpoint %s", final)
    return final


def restore_checkpoint(
    checkpoint: str,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    device: torch.device,
) -> tuple[int, list[dict[str, float]]]:
    """Load what save_checkpoint wrote besides the weights, so the schedule continues instead of restarting.

    Returns the step and the metrics history at the checkpoint.
    """
    state = torch.load(os.path.join(checkpoint, "trainer_state.pt"), map_location=device, weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    with open(os.path.join(checkpoint, "state.json")) as f:
        saved = json.load(f)
    return saved["step"], saved["history"]
