"""Train a ViT + GPT-2 captioner that writes several languages, chosen by a language token.

The decoder learns `labels = [<|lang|>, caption..., eos]`; the model shifts them right behind
`decoder_start_token_id` (= bos), so at inference `decoder_input_ids = [[bos, <|lang|>]]` picks
the language. Training runs in stages (cross-attention, then the decoder, then everything), so a
pretrained encoder and decoder are not disturbed by the randomly initialised cross-attention
early on. The same loop runs in a plain process and on each Ray Train worker (see
`train_distributed`); it checkpoints in safetensors and resumes from the last checkpoint on rerun.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch.nn.parallel import DistributedDataParallel
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    BaseImageProcessor,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    ViTConfig,
    ViTImageProcessorPil,
    ViTModel,
    VisionEncoderDecoderModel,
)

from . import storage, synth
from .config import DEFAULT_FORMATS, StorageConfig

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
# Parameter-name parts of what a VisionEncoderDecoderModel adds to a GPT-2 decoder: new in stage 1.
CROSS_ATTENTION_PARTS = ("crossattention", "ln_cross_attn", "enc_to_dec_proj")
STAGE_NAMES = ("cross-attention", "cross-attention + decoder", "everything")
BLEU_ORDER = 4  # BLEU-1..4


def language_token(lang: str) -> str:
    """The decoder token that selects a caption language, e.g. "<|fr|>"."""
    return f"<|{lang}|>"


@dataclass(frozen=True)
class TrainConfig:
    data: str  # Parquet file or folder of Parquet files with columns image (bytes), caption, lang; path or fsspec URL
    output_dir: str  # local folder that receives the trained model, tokenizer and image processor
    checkpoint_dir: str | None = None  # local folder for resumable checkpoints; None means <output_dir>/checkpoints
    storage: StorageConfig = StorageConfig()  # how to reach data on an object store (endpoint, profile, anon)
    init_model: str | None = None  # a trained captioner folder to continue from, e.g. to teach it a new language
    encoder: str | None = None  # pretrained ViT (hub id or folder); None builds a fresh one from the sizes below
    encoder_pretrain_epochs: int = 0  # synthetic data, fresh encoder: first pretrain it this long (pretrain_encoder)
    decoder: str | None = None  # pretrained GPT-2 with its tokenizer (hub id or folder); None builds one + a tokenizer
    image_size: int = 64  # input side in pixels of a fresh encoder
    patch_size: int = 8  # ViT patch side in pixels
    encoder_dim: int = 160  # hidden size of a fresh encoder
    encoder_layers: int = 4
    encoder_heads: int = 4
    decoder_dim: int = 160  # hidden size of a fresh decoder
    decoder_layers: int = 3
    decoder_heads: int = 4
    vocab_size: int = 512  # size of a freshly trained byte-level BPE vocabulary (specials included)
    max_caption_tokens: int = 32  # captions longer than this many tokens are cut
    stage_epochs: tuple[int, int, int] = (1, 1, 6)  # epochs training: cross-attention; + decoder; everything
    batch_size: int = 64  # images per optimizer step on each worker
    learning_rate: float = 1e-3  # peak; warms up linearly, then follows a cosine down to a tenth of it
    warmup_steps: int = 200
    weight_decay: float = 0.01  # on matrices only, not on biases and norms
    grad_clip: float = 1.0  # max global gradient norm
    val_fraction: float = 0.05  # share of images held out (split by image content, so no image is on both sides)
    bleu_samples: int = 256  # held-out rows captioned greedily for BLEU after each epoch
    checkpoint_every: int = 500  # optimizer steps between checkpoints; one is also written after each epoch
    keep_checkpoints: int = 2  # older checkpoints are deleted
    log_every: int = 50  # optimizer steps between progress lines
    mixed_precision: bool = True  # on CUDA: autocast to bf16 where supported, else fp16 with a GradScaler; CPU is fp32
    num_threads: int | None = None  # torch CPU threads per process; None keeps torch's default
    seed: int = 0
    stop_after_steps: int | None = None  # end early after this many steps in total, leaving a checkpoint to resume

    def __post_init__(self) -> None:
        if self.init_model and (self.encoder or self.decoder):
            raise ValueError("give either init_model or encoder/decoder, not both: init_model brings its own")
        if self.encoder_pretrain_epochs and (self.init_model or self.encoder):
            raise ValueError("encoder_pretrain_epochs pretrains a fresh encoder; drop it, or drop init_model/encoder")
        if len(self.stage_epochs) != 3 or min(self.stage_epochs) < 0 or sum(self.stage_epochs) == 0:
            raise ValueError(
                f"stage_epochs must be three epoch counts >= 0 with a positive sum, not {self.stage_epochs}"
            )
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must lie strictly between 0 and 1, not {self.val_fraction}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
        for name in ("batch_size", "max_caption_tokens", "checkpoint_every", "keep_checkpoints", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")

    @property
    def checkpoints(self) -> str:
        return self.checkpoint_dir or os.path.join(self.output_dir, "checkpoints")


# --- data -----------------------------------------------------------------------------------


@dataclass
class Examples:
    """Decoded training rows, held in memory: the synthetic sets are small and re-read every epoch."""

    pixels: torch.Tensor  # (n, 3, H, W) uint8, already resized to the model input
    captions: list[str]
    langs: list[str]
    val: torch.Tensor  # (n,) bool, True for held-out rows


def read_rows(url: str, columns: Sequence[str] = ("image", "caption", "lang"), options: dict | None = None) -> pa.Table:
    """`columns` of a Parquet file, or of every Parquet file under a folder, local or at an fsspec URL."""
    fs, path = storage.filesystem(url, options)
    files = sorted(fs.find(path, withdirs=False)) if fs.isdir(path) else [path]
    files = [f for f in files if f.endswith(".parquet")]
    if not files:
        raise FileNotFoundError(f"no Parquet files at {url}")
    tables = []
    for file in files:
        with fs.open(file, "rb") as f:
            tables.append(pq.read_table(f, columns=list(columns)))
    return pa.concat_tables(tables)


def _held_out(image: bytes, fraction: float) -> bool:
    """Split by a hash of the image bytes: stable across runs and workers, and leak-free across languages."""
    return int.from_bytes(hashlib.blake2b(image, digest_size=8).digest(), "big") / 2**64 < fraction


def decode_image(data: bytes, image_size: int, resample: int) -> Image.Image:
    """RGB at the model input size, decoded as the captioning pipeline does (JPEGs at a reduced DCT scale)."""
    with Image.open(io.BytesIO(data), formats=list(DEFAULT_FORMATS)) as image:  # never EPS and the like
        image.draft("RGB", (image_size, image_size))
        return image.convert("RGB").resize((image_size, image_size), resample)


def load_examples(
    url: str, image_size: int, resample: int, val_fraction: float, options: dict | None = None
) -> Examples:
    """Read and decode all rows; rows whose image does not decode are skipped with a warning."""
    table = read_rows(url, options=options)
    pixels, captions, langs, val = [], [], [], []
    failed = 0
    for image, text, lang in zip(*(table.column(c).to_pylist() for c in ("image", "caption", "lang"))):
        try:
            rgb = decode_image(image, image_size, resample)
        except (OSError, ValueError):
            failed += 1
            continue
        pixels.append(torch.from_numpy(np.array(rgb)).permute(2, 0, 1))  # (3, H, W)
        captions.append(text)
        langs.append(lang)
        val.append(_held_out(image, val_fraction))
    if failed:
        logger.warning("skipped %d of %d rows whose image did not decode", failed, len(table))
    if not pixels:
        raise ValueError(f"no decodable images in {url}")
    return Examples(torch.stack(pixels), captions, langs, torch.tensor(val))


# --- tokenizer, image processor, model ------------------------------------------------------


def train_tokenizer(captions: Sequence[str], languages: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer fitted to `captions`: every byte has a token, so any text round-trips."""
    lang_tokens = [language_token(lang) for lang in languages]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[*SPECIAL_TOKENS.values(), *lang_tokens],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(captions, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, extra_special_tokens=lang_tokens, **SPECIAL_TOKENS)


def add_languages(tokenizer: PreTrainedTokenizerFast, languages: Sequence[str]) -> int:
    """Add the language tokens the tokenizer lacks (resize the model's embeddings after); returns how many."""
    missing = [language_token(lang) for lang in languages if language_token(lang) not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
    return len(missing)


def fresh_image_processor(image_size: int) -> ViTImageProcessorPil:
    """Resize to the square model input and scale to [-1, 1], as the model was trained."""
    return ViTImageProcessorPil(
        size={"height": image_size, "width": image_size},
        do_resize=True,
        do_rescale=True,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def prepare_output(config: TrainConfig) -> tuple[PreTrainedTokenizerFast, BaseImageProcessor]:
    """Make the tokenizer and image processor once and save them in output_dir (workers load them there).

    A run that resumes from a checkpoint keeps those already saved, so token ids stay the checkpoint's.
    """
    if _latest_checkpoint(config.checkpoints) and os.path.exists(os.path.join(config.output_dir, "tokenizer.json")):
        return AutoTokenizer.from_pretrained(config.output_dir), AutoImageProcessor.from_pretrained(config.output_dir)
    table = read_rows(config.data, columns=("caption", "lang"), options=config.storage.options(config.data))
    captions, languages = table.column("caption").to_pylist(), sorted(set(table.column("lang").to_pylist()))
    if config.init_model:
        tokenizer = AutoTokenizer.from_pretrained(config.init_model)
        processor = AutoImageProcessor.from_pretrained(config.init_model)
    else:
        if config.decoder:
            tokenizer = AutoTokenizer.from_pretrained(config.decoder)
        else:
            tokenizer = train_tokenizer(captions, languages, config.vocab_size)
        if config.encoder:
            processor = _encoder_image_processor(config.encoder)
        else:
            processor = fresh_image_processor(config.image_size)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if add_languages(tokenizer, languages):
        logger.info("added language tokens; the tokenizer now has %d tokens", len(tokenizer))
    os.makedirs(config.output_dir, exist_ok=True)
    tokenizer.save_pretrained(config.output_dir)
    processor.save_pretrained(config.output_dir)
    return tokenizer, processor


def _encoder_image_processor(encoder: str) -> BaseImageProcessor:
    """The pretrained encoder's own processor, or a fresh one for its input size if it ships none."""
    try:
        return AutoImageProcessor.from_pretrained(encoder)
    except OSError:
        return fresh_image_processor(AutoModel.from_pretrained(encoder, use_safetensors=True).config.image_size)


def fresh_encoder(config: TrainConfig) -> ViTModel:
    return ViTModel(ViTConfig(
        image_size=config.image_size, patch_size=config.patch_size, hidden_size=config.encoder_dim,
        num_hidden_layers=config.encoder_layers, num_attention_heads=config.encoder_heads,
        intermediate_size=4 * config.encoder_dim,
    ))


def build_model(config: TrainConfig, tokenizer: PreTrainedTokenizerFast) -> VisionEncoderDecoderModel:
    """The captioner to train: loaded where pretrained weights are given, built from configs otherwise.

    Only the cross-attention (and the embedding rows of added tokens) start random on top of a
    pretrained decoder; its LM head is kept.
    """
    if config.init_model:
        model = VisionEncoderDecoderModel.from_pretrained(config.init_model, use_safetensors=True)
    else:
        if config.encoder:
            encoder = AutoModel.from_pretrained(config.encoder, use_safetensors=True)
        else:
            encoder = fresh_encoder(config)
        if config.decoder:
            decoder_config = AutoConfig.from_pretrained(config.decoder)
            decoder_config.is_decoder, decoder_config.add_cross_attention = True, True
            decoder = AutoModelForCausalLM.from_pretrained(config.decoder, config=decoder_config, use_safetensors=True)
        else:
            decoder = GPT2LMHeadModel(GPT2Config(
                vocab_size=len(tokenizer), n_positions=config.max_caption_tokens + 8, n_embd=config.decoder_dim,
                n_layer=config.decoder_layers, n_head=config.decoder_heads, add_cross_attention=True, is_decoder=True,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,  # synthetic data is unlimited; dropout only slows it
            ))
        model = VisionEncoderDecoderModel(encoder=encoder, decoder=decoder)
    if model.decoder.get_input_embeddings().num_embeddings < len(tokenizer):
        model.decoder.resize_token_embeddings(len(tokenizer))
    ids = {"decoder_start_token_id": tokenizer.bos_token_id, "bos_token_id": tokenizer.bos_token_id,
           "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    for name, value in ids.items():
        setattr(model.config, name, value)
        setattr(model.generation_config, name, value)
    model.generation_config.max_new_tokens = config.max_caption_tokens + 1
    return model


def set_stage(model: VisionEncoderDecoderModel, stage: int) -> int:
    """Make trainable what stage 1, 2 or 3 trains; returns the number of trainable parameters.

    The encoder's pooler stays frozen: the captioner never uses it, so it would get no gradient.
    """
    for name, param in model.named_parameters():
        if name.startswith("encoder.pooler."):
            param.requires_grad = False
        elif stage == 1:
            param.requires_grad = any(part in name for part in CROSS_ATTENTION_PARTS)
        elif stage == 2:
            param.requires_grad = name.startswith("decoder.") or any(part in name for part in CROSS_ATTENTION_PARTS)
        else:
            param.requires_grad = True
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --- BLEU -----------------------------------------------------------------------------------


def bleu_stats(hypothesis: str, reference: str, max_n: int = 4) -> list[float]:
    """Additive corpus statistics for one pair: [hyp length, ref length, matches_1, total_1, ...]."""
    hyp, ref = hypothesis.split(), reference.split()
    stats = [float(len(hyp)), float(len(ref))]
    for n in range(1, max_n + 1):
        hyp_ngrams = Counter(tuple(hyp[i : i + n]) for i in range(len(hyp) - n + 1))
        ref_ngrams = Counter(tuple(ref[i : i + n]) for i in range(len(ref) - n + 1))
        stats += [float(sum((hyp_ngrams & ref_ngrams).values())), float(max(len(hyp) - n + 1, 0))]
    return stats


def bleu_from_stats(stats: Sequence[float]) -> list[float]:
    """Cumulative BLEU-1..N in percent (uniform weights, brevity penalty, no smoothing) from summed stats."""
    hyp_len, ref_len = stats[0], stats[1]
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / max(hyp_len, 1e-9))
    scores, log_sum = [], 0.0
    for n in range(1, (len(stats) - 2) // 2 + 1):
        matches, total = stats[2 * n], stats[2 * n + 1]
        if total == 0:  # no n-grams this long anywhere: BLEU-n keeps the highest order there is
            scores.append(scores[-1] if scores else 0.0)
            continue
        log_sum = log_sum + math.log(matches / total) if matches > 0 else -math.inf
        scores.append(100 * brevity * math.exp(log_sum / n))
    return scores


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str], max_n: int = 4) -> list[float]:
    """BLEU-1..max_n in percent of whitespace-tokenised hypotheses against one reference each."""
    totals = [0.0] * (2 + 2 * max_n)
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        totals = [a + b for a, b in zip(totals, bleu_stats(hypothesis, reference, max_n))]
    return bleu_from_stats(totals)


# --- the loop -------------------------------------------------------------------------------


class Batcher:
    """Turns rows into model inputs: normalised pixels and dynamically padded labels."""

    def __init__(
        self, examples: Examples, tokenizer: PreTrainedTokenizerFast, processor: BaseImageProcessor, max_tokens: int
    ):
        self.examples = examples
        self.tokenizer = tokenizer
        self.mean = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
        self.std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
        self.rescale = processor.rescale_factor if processor.do_rescale else 1.0
        encoded = tokenizer(examples.captions, add_special_tokens=False).input_ids
        self.labels = [
            [tokenizer.convert_tokens_to_ids(language_token(lang)), *ids[:max_tokens], tokenizer.eos_token_id]
            for lang, ids in zip(examples.langs, encoded)
        ]

    def pixels(self, rows: torch.Tensor, device: torch.device) -> torch.Tensor:
        x = self.examples.pixels[rows].to(device).float() * self.rescale  # (B, 3, H, W)
        return (x - self.mean.to(device)) / self.std.to(device)

    def labels_for(self, rows: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) labels padded to the longest in the batch with -100, which the loss ignores, and the
        (B, T) mask of the decoder inputs they imply (the start token, then every label but the last)."""
        sequences = [self.labels[i] for i in rows.tolist()]
        width = max(len(s) for s in sequences)
        labels = torch.tensor([s + [-100] * (width - len(s)) for s in sequences], device=device)
        mask = torch.cat([torch.ones_like(labels[:, :1]), (labels[:, :-1] != -100).long()], dim=1)
        return labels, mask

    def prompts(self, rows: torch.Tensor, device: torch.device) -> torch.Tensor:
        """(B, 2) decoder prompts [bos, <|lang|>] that pick each row's language at generation."""
        return torch.tensor([[self.tokenizer.bos_token_id, self.labels[i][0]] for i in rows.tolist()], device=device)


def _epoch_batches(
    rows: torch.Tensor, batch_size: int, seed: int, epoch: int, rank: int, world: int
) -> list[torch.Tensor]:
    """This worker's batches for one epoch: the same shuffle everywhere, a disjoint equal share per worker."""
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    shuffled = rows[torch.randperm(len(rows), generator=generator)]
    per_worker = len(shuffled) // world // batch_size * batch_size  # equal step counts keep DDP in lock-step
    mine = shuffled[rank::world][:per_worker]
    return list(mine.split(batch_size))


def _schedule(config: TrainConfig, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = min(1.0, (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over every parameter (frozen ones get no gradient, so no update), decaying matrices only."""
    params = list(model.parameters())
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.98))


def _autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or not config.mixed_precision:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    if not dist.is_initialized():
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


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
    """Held-out loss per token, perplexity and greedy BLEU-1..4; each worker does its share, then they sum."""
    model.eval()
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    loss_sum, tokens = 0.0, 0.0
    for batch in rows[rank::world].split(batch_size):
        labels, mask = batcher.labels_for(batch, device)
        with _autocast(device, dtype):
            pixels = batcher.pixels(batch, device)
            logits = model(pixel_values=pixels, labels=labels, decoder_attention_mask=mask).logits  # (B, T, V)
        loss_sum += F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), reduction="sum").item()
        tokens += (labels != -100).sum().item()
    bleu = [0.0] * (2 + 2 * BLEU_ORDER)
    for batch in bleu_rows[rank::world].split(batch_size):
        with _autocast(device, dtype):
            generated = model.generate(
                pixel_values=batcher.pixels(batch, device), decoder_input_ids=batcher.prompts(batch, device),
                do_sample=False, num_beams=1,
            )
        hypotheses = batcher.tokenizer.batch_decode(generated, skip_special_tokens=True)
        for hypothesis, row in zip(hypotheses, batch.tolist()):
            bleu = [a + b for a, b in zip(bleu, bleu_stats(hypothesis.strip(), batcher.examples.captions[row]))]
    loss_sum, tokens, *bleu = _all_reduce_sum([loss_sum, tokens, *bleu], device)
    model.train()
    val_loss = loss_sum / max(tokens, 1.0)
    metrics = {"val_loss": val_loss, "val_perplexity": math.exp(min(val_loss, 50.0))}
    metrics.update({f"bleu{n}": score for n, score in enumerate(bleu_from_stats(bleu), start=1)})
    return metrics


def _latest_checkpoint(directory: str) -> str | None:
    """The newest complete checkpoint: its state.json is written last, so a torn one is ignored."""
    if not os.path.isdir(directory):
        return None
    done = [
        d for d in os.listdir(directory)
        if d.startswith("step-") and os.path.exists(os.path.join(directory, d, "state.json"))
    ]
    return os.path.join(directory, max(done)) if done else None


def _last_metrics(directory: str) -> dict[str, float]:
    """The last epoch's metrics, as the newest checkpoint recorded them."""
    with open(os.path.join(_latest_checkpoint(directory), "state.json")) as f:
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


def _stage_of(epoch: int, stage_epochs: Sequence[int]) -> int:
    """The stage (1, 2 or 3) that the 0-based `epoch` belongs to."""
    end = 0
    for stage, epochs in enumerate(stage_epochs, start=1):
        end += epochs
        if epoch < end:
            return stage
    return len(stage_epochs)


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
    image_size = processor.size["height"]
    examples = load_examples(
        config.data, image_size, processor.resample, config.val_fraction, config.storage.options(config.data)
    )
    batcher = Batcher(examples, tokenizer, processor, config.max_caption_tokens)
    train_rows, val_rows = (~examples.val).nonzero().squeeze(1), examples.val.nonzero().squeeze(1)
    if len(val_rows) == 0 or len(train_rows) < config.batch_size * world:
        raise ValueError(f"{len(train_rows)} training and {len(val_rows)} held-out rows are too few for this run")
    bleu_rows = val_rows[: config.bleu_samples]
    steps_per_epoch = len(_epoch_batches(train_rows, config.batch_size, config.seed, 0, rank, world))
    total_steps = steps_per_epoch * sum(config.stage_epochs)

    checkpoint = _latest_checkpoint(config.checkpoints)
    if checkpoint:
        model = VisionEncoderDecoderModel.from_pretrained(checkpoint, use_safetensors=True)
    else:
        model = build_model(config, tokenizer)
    model.to(device).train()
    optimizer = _optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config, total_steps))
    dtype = _autocast_dtype(config, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    step, history = 0, []
    if checkpoint:
        state = torch.load(os.path.join(checkpoint, "trainer_state.pt"), map_location=device, weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        with open(os.path.join(checkpoint, "state.json")) as f:
            saved = json.load(f)
        step, history = saved["step"], saved["history"]
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
        batches = _epoch_batches(train_rows, config.batch_size, config.seed, epoch, rank, world)
        for batch in batches[step - epoch * steps_per_epoch :]:
            labels, mask = batcher.labels_for(batch, device)
            with _autocast(device, dtype):
                loss = ddp(pixel_values=batcher.pixels(batch, device), labels=labels, decoder_attention_mask=mask).loss
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
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


def pretrain_encoder(config: TrainConfig, device: torch.device | None = None) -> TrainConfig:
    """Pretrain a fresh ViT to name the colours and shapes in synthetic scenes, max-pooled over its patches.

    Through cross-attention, which averages over patches, a random ViT learns shapes very slowly: a
    shape shows in a few edge patches, while colour shows everywhere. Max pooling hands the gradient
    to the patch that shows the evidence, so the encoder learns it quickly; the captioner then starts
    from it as from a pretrained hub ViT (which is what to pass as `encoder` for photographs). The
    labels are what the captions name in synth's vocabulary, so this suits synthetic data only.
    Returns `config` with the saved encoder as its pretrained `encoder`; a rerun skips the work.
    """
    path = os.path.join(config.checkpoints, "encoder")
    pretrained = replace(config, encoder=path, encoder_pretrain_epochs=0)
    if os.path.exists(os.path.join(path, "model.safetensors")) or _latest_checkpoint(config.checkpoints):
        return pretrained
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    processor = AutoImageProcessor.from_pretrained(config.output_dir)
    examples = load_examples(
        config.data, processor.size["height"], processor.resample, config.val_fraction,
        config.storage.options(config.data),
    )
    concepts = [*synth.COLOURS, *synth.SHAPES]
    targets = torch.zeros(len(examples.captions), len(concepts))  # (n, C) multi-hot
    for i, (text, lang) in enumerate(zip(examples.captions, examples.langs)):
        colours, shapes = synth.named(text, lang)
        targets[i, [concepts.index(name) for name in colours | shapes]] = 1.0
    if not targets.any():
        raise ValueError("encoder pretraining needs captions that name synth's colours and shapes; "
                         "for other data pass a pretrained encoder instead")
    batcher = Batcher(examples, AutoTokenizer.from_pretrained(config.output_dir), processor, config.max_caption_tokens)
    train_rows, val_rows = (~examples.val).nonzero().squeeze(1), examples.val.nonzero().squeeze(1)
    encoder = fresh_encoder(config).to(device).train()
    head = torch.nn.Linear(config.encoder_dim, len(concepts)).to(device)
    modules = torch.nn.ModuleList([encoder, head])
    optimizer = _optimizer(modules, config)
    steps_per_epoch = len(train_rows) // config.batch_size
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _schedule(config, steps_per_epoch * config.encoder_pretrain_epochs)
    )
    dtype = _autocast_dtype(config, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def logits_of(rows: torch.Tensor) -> torch.Tensor:
        with _autocast(device, dtype):
            patches = encoder(pixel_values=batcher.pixels(rows, device)).last_hidden_state  # (B, 1 + P, D)
            return head(patches.amax(dim=1)).float()  # (B, C)

    for epoch in range(config.encoder_pretrain_epochs):
        started, loss_sum = time.time(), 0.0
        for batch in _epoch_batches(train_rows, config.batch_size, config.seed, epoch, 0, 1):
            loss = F.binary_cross_entropy_with_logits(logits_of(batch), targets[batch].to(device))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(modules.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            loss_sum += loss.item()
        encoder.eval()
        with torch.no_grad():
            named = torch.cat([logits_of(b) > 0 for b in val_rows.split(config.batch_size)]).cpu()  # (V, C)
        encoder.train()
        all_right = (named == targets[val_rows].bool()).all(dim=1).float().mean().item()
        logger.info("encoder pretraining epoch %d/%d: loss %.4f, held-out images with every colour and shape "
                    "right %.1f%%, %.0f s", epoch + 1, config.encoder_pretrain_epochs, loss_sum / steps_per_epoch,
                    100 * all_right, time.time() - started)
    encoder.save_pretrained(path)
    processor.save_pretrained(path)
    return pretrained


def train(config: TrainConfig) -> dict[str, float]:
    """Train in this process (on CUDA if there is one) and save the model to config.output_dir."""
    prepare_output(config)
    if config.encoder_pretrain_epochs:
        config = pretrain_encoder(config)
    return run_training(config)


def train_distributed(config: TrainConfig, num_workers: int, use_gpu: bool = False) -> dict[str, float]:
    """Train with Ray Train: `num_workers` DDP workers; output and checkpoint folders must be shared by them.

    The tokenizer and image processor are made once here, in the driver, before the workers start.
    """
    import ray.train
    from ray.train.torch import TorchTrainer, get_device

    prepare_output(config)
    if config.encoder_pretrain_epochs:
        config = pretrain_encoder(config)  # in this process, once, before the workers start
    log_level = logging.getLogger().getEffectiveLevel()

    def loop_per_worker() -> None:
        logging.basicConfig(level=log_level, format="%(asctime)s %(name)s %(message)s")  # workers start unconfigured
        run_training(config, device=get_device(), report=ray.train.report)

    trainer = TorchTrainer(
        loop_per_worker,
        scaling_config=ray.train.ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
        run_config=ray.train.RunConfig(storage_path=os.path.abspath(os.path.join(config.checkpoints, "ray"))),
    )
    trainer.fit()
    return _last_metrics(config.checkpoints)
