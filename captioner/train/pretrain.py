"""Encoder pretraining for synthetic data: teach a fresh ViT colours and shapes before it learns to caption.

It stands in for the pretrained hub ViT that photographs would use, which the demo model has not.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F
from transformers import AutoImageProcessor, AutoTokenizer

from .build import fresh_encoder
from .checkpoints import latest_checkpoint
from .config import TrainConfig
from ..models.preprocess import image_spec
from .data import Batcher, epoch_batches, load_examples
from .grammar import parse
from .optim import adamw, autocast, autocast_dtype, grad_scaler, lr_schedule, update
from .scenes import COLOURS, SHAPES

logger = logging.getLogger(__name__)


CONCEPTS = (*COLOURS, *SHAPES)
# Where a concept is: anywhere, or in the shape that is above / below / left of / right of the other.
ROLES = ("any", "upper", "lower", "left", "right")
_FIRST_ROLE = {"above": ("upper", "lower"), "below": ("lower", "upper"), "left": ("left", "right"),
               "right": ("right", "left")}


def concept_targets(captions: Sequence[str], langs: Sequence[str]) -> torch.Tensor:
    """(n, ROLES x CONCEPTS) multi-hot targets: each colour and shape a caption names, anywhere and in its place.

    The places make the patches say where a shape is relative to the other, which a caption's relation word
    needs and which "anywhere" alone never teaches. Captions the grammar could not have written get no targets.
    """
    targets = torch.zeros(len(captions), len(ROLES), len(CONCEPTS))
    for i, (text, lang) in enumerate(zip(captions, langs)):
        meaning = parse(text, lang)
        if meaning is None:
            continue
        if len(meaning) == 1:
            placed = [(meaning[0], "any")]
        else:
            first, relation, second = meaning
            first_role, second_role = _FIRST_ROLE[relation]
            placed = [(first, "any"), (second, "any"), (first, first_role), (second, second_role)]
        for (colour, kind), role in placed:
            targets[i, ROLES.index(role), [CONCEPTS.index(colour), CONCEPTS.index(kind)]] = 1.0
    if not targets.any():
        raise ValueError("encoder pretraining needs captions that name the synthetic scenes' colours and shapes; "
                         "for other data pass a pretrained encoder instead")
    return targets.flatten(1)


def pretrain_encoder(config: TrainConfig, device: torch.device | None = None) -> TrainConfig:
    """Pretrain a fresh ViT to name the colours and shapes in synthetic scenes, and where each shape is of
    the other (`concept_targets`), max-pooled over its patches.

    Through cross-attention, which averages over patches, a random ViT learns shapes very slowly: a
    shape shows in a few edge patches, while colour shows everywhere. Max pooling hands the gradient
    to the patch that shows the evidence, so the encoder learns it quickly; the captioner then starts
    from it as from a pretrained hub ViT (which is what to pass as `encoder` for photographs). The
    labels are read back from the captions (grammar.parse), so this suits synthetic data only.
    Returns `config` with the saved encoder as its pretrained `encoder`; a rerun skips the work.
    """
    path = os.path.join(config.checkpoints, "encoder")
    pretrained = replace(config, encoder=path, encoder_pretrain_epochs=0)
    if os.path.exists(os.path.join(path, "model.safetensors")) or latest_checkpoint(config.checkpoints):
        return pretrained
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    processor = AutoImageProcessor.from_pretrained(config.output_dir)
    examples = load_examples(config.data, image_spec(processor).resize, config.val_fraction,
                             config.storage.options(config.data))
    targets = concept_targets(examples.captions, examples.langs)
    batcher = Batcher(examples, AutoTokenizer.from_pretrained(config.output_dir), processor, config.max_caption_tokens)
    train_rows, val_rows = (~examples.val).nonzero().squeeze(1), examples.val.nonzero().squeeze(1)
    encoder = fresh_encoder(config).to(device).train()
    head = torch.nn.Linear(config.encoder_dim, targets.shape[1]).to(device)
    modules = torch.nn.ModuleList([encoder, head])
    optimizer = adamw(modules, config)
    steps_per_epoch = len(train_rows) // config.batch_size
    scheduler = lr_schedule(optimizer, config, steps_per_epoch * config.encoder_pretrain_epochs)
    dtype = autocast_dtype(config, device)
    scaler = grad_scaler(device, dtype)

    def logits_of(rows: torch.Tensor) -> torch.Tensor:
        with autocast(device, dtype):
            patches = encoder(pixel_values=batcher.pixels(rows, device)).last_hidden_state  # (B, 1 + P, D)
            return head(patches.amax(dim=1)).float()  # (B, C)

    for epoch in range(config.encoder_pretrain_epochs):
        started, loss_sum = time.time(), 0.0
        for batch in epoch_batches(train_rows, config.batch_size, config.seed, epoch, 0, 1):
            loss = F.binary_cross_entropy_with_logits(logits_of(batch), targets[batch].to(device))
            update(loss, modules.parameters(), optimizer, scheduler, scaler, config.grad_clip)
            loss_sum += loss.item()
        encoder.eval()
        with torch.no_grad():
            predicted = torch.cat([logits_of(b) > 0 for b in val_rows.split(config.batch_size)]).cpu()  # (V, C)
        encoder.train()
        right = (predicted == targets[val_rows].bool()).all(dim=1).float()  # (V,)
        two = targets[val_rows][:, len(CONCEPTS):].any(dim=1)  # (V,) rows whose caption places two shapes
        logger.info("encoder pretraining epoch %d/%d: loss %.4f, held-out images with every colour and shape "
                    "right and in its place %.1f%% (two shapes: %.1f%%), %.0f s", epoch + 1,
                    config.encoder_pretrain_epochs, loss_sum / steps_per_epoch, 100 * right.mean().item(),
                    100 * right[two].mean().nan_to_num().item(), time.time() - started)
    encoder.save_pretrained(path)
    processor.save_pretrained(path)
    return pretrained
