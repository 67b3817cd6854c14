"""Training on a Ray cluster: the loop of loop.run_training on several DDP workers under Ray Train.

Ray is imported inside the function, so the rest of training works where Ray Train is not wanted.
"""

from __future__ import annotations

import logging
import os

from .build import prepare_output
from .checkpoints import last_metrics
from .config import TrainConfig
from .loop import run_training
from .pretrain import pretrain_encoder


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
    return last_metrics(config.checkpoints)
