"""Train a ViT + GPT-2 captioner that writes several languages, chosen by a language token.

The decoder learns `labels = [<|lang|>, caption..., eos]`; the model shifts them right behind
`decoder_start_token_id` (= bos), so at inference `decoder_input_ids = [[bos, <|lang|>]]` picks
the language. Training runs in stages (cross-attention, then the decoder, then everything), so a
pretrained encoder and decoder are not disturbed by the randomly initialised cross-attention
early on. The same loop runs in a plain process and on each Ray Train worker (see
`distributed.train_distributed`); it checkpoints in safetensors and resumes from the last
checkpoint on rerun.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from transformers import AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel

from .build import STAGE_NAMES, build_model, prepare_output, set_stage
from .checkpoints import latest_checkpoint, restore_checkpoint, save_checkpoint
from .config import TrainConfig
from ..models.preprocess import image_spec
from .data import Batcher, epoch_batches, load_examples
from .metrics import bleu
from .optim import adamw, autocast, autocast_dtype, grad_scaler, lr_schedule, update
from .pretrain import pretrain_encoder

logger = logging.getLogger(__name__)


def _stage_of(epoch: int, stage_epochs: Sequence[int]) -> int:
    """The stage (1, 2 or 3) that the 0-based `epoch` belongs to."""
    end = 0
    for stage, epochs in enumerate(stage_epochs, start=1):
        end += epochs
        if epoch < end:
            return stage
    return len(stage_epochs)


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sums over every DDP worker; the values themselves in a single process."""
    if not dist.is_initialized():
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def _all_gather(items: list) -> list:
    """Every DDP worker's `items`, concatenated in rank order; `items` in a single process."""
    if not dist.is_initialized():
        return items
    gathered: list[list | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]


@torch.no_grad()
def evaluate(
    model: VisionEncoderDecoderModel,
    batcher: Batcher,
    rows: torch.Tensor,
    bleu_rows: torch.Tensor,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype | None,
) -> dict[str, float]:
    """Held-out loss per token, perplexity and greedy BLEU-1..4.

    Each worker does its share; the losses are summed and BLEU is scored on every worker's captions
    together, since corpus BLEU is not an average of per-worker scores.
    """
    model.eval()
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    loss_sum, tokens = 0.0, 0.0
    for batch in rows[rank::world].split(batch_size):
        labels, mask = batcher.labels_for(batch, device)
        with autocast(device, dtype):
            pixels = batcher.pixels(batch, device)
            logits = model(pixel_values=pixels, labels=labels, decoder_attention_mask=mask).logits  # (B, T, V)
        loss_sum += F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), reduction="sum").item()
        tokens += (labels != -100).sum().item()
    pairs = []  # (hypothesis, reference)
    start = model.config.decoder_start_token_id
    for batch in bleu_rows[rank::world].split(batch_size):
        with autocast(device, dtype):
            generated = model.generate(pixel_values=batcher.pixels(batch, device),
                                       decoder_input_ids=batcher.prompts(batch, start, device),
                                       do_sample=False, num_beams=1)
        hypotheses = batcher.tokenizer.batch_decode(generated, skip_special_tokens=True)
        pairs += [(text.strip(), batcher.examples.captions[row]) for text, row in zip(hypotheses, batch.tolist())]
    loss_sum, tokens = _all_reduce_sum([loss_sum, tokens], device)
    pairs = _all_gather(pairs)
    model.train()
    val_loss = loss_sum / max(tokens, 1.0)
    metrics = {"val_loss": val_loss, "val_perplexity": math.exp(min(val_loss, 50.0))}
    scores = bleu([h for h, _ in pairs], [r for _, r in pairs])
    metrics.update({f"bleu{n}": score for n, score in enumerate(scores, start=1)})
    return metrics


def run_training(
    config: TrainConfig,
    device: torch.device | None = None,
    report: Callable[[dict[str, float]], None] | None = None,
) -> dict[str, float]:
    """The training loop of one process; with torch.distributed initialised, one of several DDP workers.

    Expects `prepare_output(config)` to have run. Calls `report(metrics)` after every epoch on every
    worker (Ray Train passes `ray.train.report`). Returns the last epoch's metrics.
    """
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(config.output_dir)
    processor = AutoImageProcessor.from_pretrained(config.output_dir)
    examples = load_examples(config.data, image_spec(processor).resize, config.val_fraction,
                             config.storage.options(config.data))
    batcher = Batcher(examples, tokenizer, processor, config.max_caption_tokens)
    train_rows, val_rows = (~examples.val).nonzero().squeeze(1), examples.val.nonzero().squeeze(1)
    if len(val_rows) == 0 or len(train_rows) < config.batch_size * world:
        raise ValueError(f"{len(train_rows)} training and {len(val_rows)} held-out rows are too few for this run")
    bleu_rows = val_rows[: config.bleu_samples]
    steps_per_epoch = len(epoch_batches(train_rows, config.batch_size, config.seed, 0, rank, world))
    total_steps = steps_per_epoch * sum(config.stage_epochs)

    checkpoint = latest_checkpoint(config.checkpoints)
    if checkpoint:
        model = VisionEncoderDecoderModel.from_pretrained(checkpoint, use_safetensors=True)
    else:
        model = build_model(config, tokenizer)
    model.to(device).train()
    optimizer = adamw(model, config)
    scheduler = lr_schedule(optimizer, config, total_steps)
    dtype = autocast_dtype(config, device)
    scaler = grad_scaler(device, dtype)
    step, history = 0, []
    if checkpoint:
        step, history = restore_checkpoint(checkpoint, optimizer, scheduler, scaler, device)
        logger.info("resuming from %s at step %d", checkpoint, step)
    if rank == 0:
        logger.info(
            "%d training and %d held-out rows, %d workers, %d steps per epoch, %d steps in all, %.2fM parameters",
            len(train_rows), len(val_rows), world, steps_per_epoch, total_steps,
            sum(p.numel() for p in model.parameters()) / 1e6,
        )

    metrics = history[-1] if history else {}
    stage, ddp = 0, model
    for epoch in range(step // steps_per_epoch, sum(config.stage_epochs)):
        if _stage_of(epoch, config.stage_epochs) != stage:
            stage = _stage_of(epoch, config.stage_epochs)
            trainable = set_stage(model, stage)
            # DDP records which parameters need gradients when it wraps, so wrap anew per stage.
            ddp = DistributedDataParallel(model) if dist.is_initialized() else model
            if rank == 0:
                logger.info("stage %d (%s): %.2fM trainable parameters", stage, STAGE_NAMES[stage - 1], trainable / 1e6)
        started, loss_sum, loss_count = time.time(), 0.0, 0
        batches = epoch_batches(train_rows, config.batch_size, config.seed, epoch, rank, world)
        for batch in batches[step - epoch * steps_per_epoch :]:
            labels, mask = batcher.labels_for(batch, device)
            with autocast(device, dtype):
                loss = ddp(pixel_values=batcher.pixels(batch, device), labels=labels, decoder_attention_mask=mask).loss
            trainable_params = [p for p in model.parameters() if p.requires_grad]
            update(loss, trainable_params, optimizer, scheduler, scaler, config.grad_clip)
            step += 1
            loss_sum, loss_count = loss_sum + loss.item(), loss_count + 1
            if rank == 0 and step % config.log_every == 0:
                images_per_second = loss_count * config.batch_size * world / (time.time() - started)
                logger.info("step %d/%d  epoch %d  loss %.4f  lr %.2e  %.0f img/s",
                            step, total_steps, epoch + 1, loss.item(), scheduler.get_last_lr()[0], images_per_second)
            stopping = config.stop_after_steps is not None and step >= config.stop_after_steps
            if rank == 0 and (step % config.checkpoint_every == 0 or stopping):
                save_checkpoint(config, model, optimizer, scheduler, scaler, step, history)
            if stopping:
                if dist.is_initialized():
                    dist.barrier()
                logger.info("stopped after step %d as asked; rerun to resume", step)
                return {**metrics, "step": float(step)}

        train_loss = _all_reduce_sum([loss_sum, float(loss_count)], device)
        metrics = {"epoch": float(epoch + 1), "step": float(step), "stage": float(stage),
                   "train_loss": train_loss[0] / max(train_loss[1], 1.0)}
        metrics.update(evaluate(model, batcher, val_rows, bleu_rows, config.batch_size, device, dtype))
        metrics["epoch_seconds"] = time.time() - started
        history.append(metrics)
        if rank == 0:
            logger.info("epoch %d: %s", epoch + 1, "  ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
            save_checkpoint(config, model, optimizer, scheduler, scaler, step, history)
        if report:
            report(metrics)

    if rank == 0:
        model.save_pretrained(config.output_dir)
        with open(os.path.join(config.output_dir, "training_history.json"), "w") as f:
            json.dump(history, f, indent=1)
        logger.info("saved the trained model to %s", config.output_dir)
    if dist.is_initialized():
        dist.barrier()
    return metrics


def train(config: TrainConfig) -> dict[str, float]:
    """Train in this process (on CUDA if there is one) and save the model to config.output_dir."""
    prepare_output(config)
    if config.encoder_pretrain_epochs:
        config = pretrain_encoder(config)
    return run_training(config)
