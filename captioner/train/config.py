"""What a training run is asked to do, checked up front so a bad setting fails before any data is read."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..config import StorageConfig

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


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
        """Where checkpoints go: checkpoint_dir, or a folder inside output_dir when none is given."""
        return self.checkpoint_dir or os.path.join(self.output_dir, "checkpoints")
