"""What the training tests share: a tiny model config that trains in seconds, and a small synthetic dataset."""

from pathlib import Path

import pytest

from captioner.media.image import Resize
from captioner.train.config import TrainConfig
from captioner.train.data import load_examples
from captioner.train.synth import write_parquet


def tiny_config(data: Path, output: Path, **overrides) -> TrainConfig:
    """A model of a few ten thousand parameters on 32 px images: seconds per epoch on a laptop CPU."""
    settings = dict(
        data=str(data), output_dir=str(output), image_size=32, patch_size=8, encoder_dim=32, encoder_layers=1,
        encoder_heads=2, decoder_dim=32, decoder_layers=1, decoder_heads=2, vocab_size=300, batch_size=8,
        learning_rate=3e-3, warmup_steps=2, val_fraction=0.2, bleu_samples=8, log_every=1000,
    )
    return TrainConfig(**{**settings, **overrides})


def steps_per_epoch(config: TrainConfig, workers: int) -> int:
    """Each worker takes whole batches of an equal share of the training rows."""
    examples = load_examples(config.data, Resize(config.image_size, config.image_size), config.val_fraction)
    return int((~examples.val).sum()) // workers // config.batch_size


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.parquet"
    write_parquet(str(path), 96, seed=1, size=32)
    return path
