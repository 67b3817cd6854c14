import pytest

from captioner.train.distributed import train_distributed
from trainkit import data, steps_per_epoch, tiny_config  # noqa: F401 (data is a fixture)


@pytest.mark.slow
def test_ray_train_runs_two_cpu_workers(data, tmp_path, local_ray):  # noqa: F811
    """On the suite's local Ray (2 CPUs); workers import captioner from the installed checkout."""
    config = tiny_config(data, tmp_path / "out", stage_epochs=(0, 1, 1))
    metrics = train_distributed(config, num_workers=2)
    assert metrics["step"] == 2 * steps_per_epoch(config, workers=2)  # two workers shared each epoch
    assert metrics["val_loss"] > 0 and "bleu4" in metrics
    assert (tmp_path / "out" / "model.safetensors").exists()
