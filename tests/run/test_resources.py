import pytest

from captioner.config import ConfigError, ResourceConfig
from captioner.run import resources


def test_resources_one_actor_per_gpu():
    res = resources.resolve(ResourceConfig(), cluster_cpus=32, cluster_gpus=4)
    assert (res.concurrency, res.num_gpus, res.num_cpus, res.batch_size) == (4, 1.0, 1.0, 64)


def test_resources_on_cpu_leave_cores_for_decoding():
    assert resources.resolve(ResourceConfig(), cluster_cpus=2, cluster_gpus=0).concurrency == 1
    res = resources.resolve(ResourceConfig(), cluster_cpus=16, cluster_gpus=0)
    assert (res.concurrency, res.num_cpus, res.num_gpus) == (2, 4.0, 0.0)


def test_resources_user_values_win():
    res = resources.resolve(ResourceConfig(concurrency=3, batch_size=5, num_cpus=1), cluster_cpus=8, cluster_gpus=0)
    assert (res.concurrency, res.batch_size, res.num_cpus) == (3, 5, 1)


def test_resources_that_cluster_cannot_grant_are_refused():
    with pytest.raises(ConfigError, match="--num-gpus 0"):
        resources.resolve(ResourceConfig(num_gpus=1), cluster_cpus=8, cluster_gpus=0)
    with pytest.raises(ConfigError, match="lower --num-cpus"):
        resources.resolve(ResourceConfig(num_cpus=64), cluster_cpus=8, cluster_gpus=0)
    with pytest.raises(ConfigError, match="--batch-size"):
        resources.resolve(ResourceConfig(batch_size=0), cluster_cpus=8, cluster_gpus=0)


GIB = 2**30


def test_actor_and_decode_task_must_fit_on_one_node():
    nodes = [{"CPU": 8.0, "memory": 16 * GIB}, {"CPU": 8.0, "GPU": 1.0, "memory": 32 * GIB}]
    resources.check_fits(ResourceConfig(num_gpus=1, num_cpus=4), nodes)
    with pytest.raises(ConfigError, match="no node of the cluster can host a caption actor"):
        resources.check_fits(ResourceConfig(num_gpus=2, num_cpus=1), nodes)  # 2 GPUs in total, but never on one node
    with pytest.raises(ConfigError, match="caption actor .*Lower --num-gpus/--num-cpus"):
        resources.check_fits(ResourceConfig(num_gpus=1, num_cpus=12), nodes)
    with pytest.raises(ConfigError, match="decode task .*--decode-memory-mb"):
        resources.check_fits(ResourceConfig(num_gpus=0, num_cpus=1, decode_memory_mb=64 * 1024), nodes)


def test_actors_must_leave_a_cpu_for_decoding():
    nodes = [{"CPU": 2.0, "memory": 16 * GIB}]
    resources.check_fits(ResourceConfig(concurrency=1, num_cpus=1), nodes)
    with pytest.raises(ConfigError, match="take 1.5 of the cluster's 2 CPUs and leave none for a decode task"):
        resources.check_fits(ResourceConfig(concurrency=2, num_cpus=0.75), nodes)  # 0.5 CPU left: decoding would never start


@pytest.mark.parametrize("images,cpus,batch", [(192, 2, 32), (100, 2, 32), (10**7, 64, 48), (5, 2, 64), (1000, 16, 1)])
def test_input_blocks_hold_whole_caption_batches(images, cpus, batch):
    rows = resources.block_rows(ResourceConfig(batch_size=batch, decode_batch_size=16), images, cpus)
    assert rows % batch == 0 and rows >= 16
    assert rows < 4096 + batch  # millions of URIs still make many small tasks


def test_input_blocks_keep_every_cpu_decoding():
    assert resources.block_rows(ResourceConfig(batch_size=32), 4096, 8) == 128  # 32 blocks for 8 CPUs
    assert resources.block_rows(ResourceConfig(batch_size=48), 10**7, 64) == 4128  # 4096 rounded up to whole batches


def test_concurrency_range():
    res = resources.resolve(ResourceConfig(concurrency=1, max_concurrency=8), cluster_cpus=8, cluster_gpus=1)
    assert (res.concurrency, res.max_concurrency) == (1, 8)
    for low, high in [(None, 4), (4, 2)]:
        with pytest.raises(ConfigError, match="MIN:MAX"):
            ResourceConfig(concurrency=low, max_concurrency=high).validate(8, 1)


def test_cpu_actors_thread_over_every_core_and_gpu_actors_over_their_own():
    assert resources.resolve(ResourceConfig(), cluster_cpus=2, cluster_gpus=0).num_threads == 2
    assert resources.resolve(ResourceConfig(), cluster_cpus=16, cluster_gpus=0).num_threads == 8  # 2 actors
    assert resources.resolve(ResourceConfig(num_threads=1), cluster_cpus=2, cluster_gpus=0).num_threads == 1
    assert resources.resolve(ResourceConfig(), cluster_cpus=16, cluster_gpus=2).num_threads == 1


def test_a_gpu_actor_leaves_its_one_cpu_to_ray_and_names_a_chosen_count():
    gpu = resources.resolve(ResourceConfig(), cluster_cpus=16, cluster_gpus=2)
    assert resources.actor_args(gpu) == {"num_gpus": 1.0}
    chosen = resources.resolve(ResourceConfig(num_cpus=4), cluster_cpus=16, cluster_gpus=2)
    assert resources.actor_args(chosen) == {"num_cpus": 4, "num_gpus": 1.0}
    assert resources.actor_args(resources.resolve(ResourceConfig(), 2, 0)) == {"num_cpus": 1.0, "num_gpus": 0.0}
