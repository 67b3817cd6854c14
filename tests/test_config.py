import pytest

from captioner.config import ConfigError, GenerationConfig, InputConfig, ModelConfig, ResourceConfig, RunConfig, StorageConfig


def test_resources_one_actor_per_gpu():
    res = ResourceConfig().resolve(cluster_cpus=32, cluster_gpus=4)
    assert (res.concurrency, res.num_gpus, res.num_cpus, res.batch_size) == (4, 1.0, 1.0, 64)


def test_resources_on_cpu_leave_cores_for_decoding():
    assert ResourceConfig().resolve(cluster_cpus=2, cluster_gpus=0).concurrency == 1
    res = ResourceConfig().resolve(cluster_cpus=16, cluster_gpus=0)
    assert (res.concurrency, res.num_cpus, res.num_gpus) == (2, 4.0, 0.0)


def test_resources_user_values_win():
    res = ResourceConfig(concurrency=3, batch_size=5, num_cpus=1).resolve(cluster_cpus=8, cluster_gpus=0)
    assert (res.concurrency, res.batch_size, res.num_cpus) == (3, 5, 1)


def test_resources_that_cluster_cannot_grant_are_refused():
    with pytest.raises(ConfigError, match="--num-gpus 0"):
        ResourceConfig(num_gpus=1).resolve(cluster_cpus=8, cluster_gpus=0)
    with pytest.raises(ConfigError, match="lower --num-cpus"):
        ResourceConfig(num_cpus=64).resolve(cluster_cpus=8, cluster_gpus=0)
    with pytest.raises(ConfigError, match="--batch-size"):
        ResourceConfig(batch_size=0).resolve(cluster_cpus=8, cluster_gpus=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_new_tokens": 0}, "--max-new-tokens"),
        ({"num_beams": 0}, "--num-beams"),
        ({"temperature": 0.0}, "--temperature"),
        ({"top_p": 1.5}, "--top-p"),
    ],
)
def test_generation_validation(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        GenerationConfig(**kwargs).validate()


def test_sampling_only_when_asked():
    assert not GenerationConfig().do_sample
    assert GenerationConfig(top_p=0.9).do_sample


def test_languages_validated():
    base = RunConfig(input=InputConfig("in"), output="out")
    with pytest.raises(ConfigError, match="twice"):
        RunConfig(input=base.input, output="out", languages=("en", "en")).validate()
    with pytest.raises(ConfigError, match="invalid language"):
        RunConfig(input=base.input, output="out", languages=("e n",)).validate()


def test_fingerprints_follow_what_changes_each_language():
    base = RunConfig(input=InputConfig("in"), output="out", languages=("en", "fr"))
    moved = RunConfig(input=InputConfig("elsewhere"), output="out2", languages=("en", "fr"), mode="append")
    other_model = RunConfig(input=InputConfig("in"), output="out", model=ModelConfig(name="other"))
    beams = RunConfig(input=InputConfig("in"), output="out", generation=GenerationConfig(num_beams=4))
    translated = RunConfig(input=InputConfig("in"), output="out", languages=("en", "fr", "de"),
                           translate=(("fr", "opus-fr"), ("de", "opus-de")))
    assert base.fingerprints() == moved.fingerprints()
    assert len({base.fingerprints()["en"], other_model.fingerprints()["en"], beams.fingerprints()["en"]}) == 3
    assert translated.fingerprints()["en"] == base.fingerprints()["en"]  # adding languages leaves en alone
    assert translated.fingerprints()["fr"] != base.fingerprints()["fr"]  # native fr and translated fr differ
    assert base.fingerprint() != translated.fingerprint()


def test_storage_options_apply_to_s3_only():
    store = StorageConfig(endpoint_url="http://127.0.0.1:9000", anon=True, profile="p", max_attempts=5,
                          retry_mode="adaptive")
    retries = {"retries": {"total_max_attempts": 5, "mode": "adaptive"}, "connect_timeout": 10.0,
               "read_timeout": 60.0}
    assert store.options("s3://b/k") == {"endpoint_url": "http://127.0.0.1:9000", "anon": True, "profile": "p",
                                         "config_kwargs": retries}
    assert store.options("/local/path") == {}


def test_bad_store_and_decode_settings_are_refused_with_the_flag_to_fix():
    import pytest

    from captioner.config import ConfigError, DecodeConfig

    def run(**kwargs):
        return RunConfig(input=InputConfig("in"), output="out", **kwargs)

    for kwargs, flag in [
        ({"storage": StorageConfig(max_attempts=0)}, "--store-max-attempts"),
        ({"storage": StorageConfig(retry_mode="legacy")}, "--store-retry-mode"),
        ({"storage": StorageConfig(endpoint_url="http://key:secret@127.0.0.1:9000")}, "must not carry credentials"),
        ({"decode": DecodeConfig(formats=("JPEG", "EPS"))}, "EPS"),
        ({"decode": DecodeConfig(formats=())}, "--image-formats"),
        ({"decode": DecodeConfig(max_pixels=0)}, "--max-image-pixels"),
        ({"decode": DecodeConfig(max_file_mb=0)}, "--max-image-mb"),
        ({"decode": DecodeConfig(timeout_s=0)}, "--decode-timeout-s"),
        ({"decode": DecodeConfig(memory_mb=0)}, "--decode-memory-cap-mb"),
    ]:
        with pytest.raises(ConfigError, match=flag):
            run(**kwargs).validate()
    run(decode=DecodeConfig(formats=("PNG", "PPM"))).validate()


GIB = 2**30


def test_actor_and_decode_task_must_fit_on_one_node():
    nodes = [{"CPU": 8.0, "memory": 16 * GIB}, {"CPU": 8.0, "GPU": 1.0, "memory": 32 * GIB}]
    ResourceConfig(num_gpus=1, num_cpus=4).check_fits(nodes)
    with pytest.raises(ConfigError, match="no node of the cluster can host a caption actor"):
        ResourceConfig(num_gpus=2, num_cpus=1).check_fits(nodes)  # 2 GPUs in total, but never on one node
    with pytest.raises(ConfigError, match="caption actor .*Lower --num-gpus/--num-cpus"):
        ResourceConfig(num_gpus=1, num_cpus=12).check_fits(nodes)
    with pytest.raises(ConfigError, match="decode task .*--decode-memory-mb"):
        ResourceConfig(num_gpus=0, num_cpus=1, decode_memory_mb=64 * 1024).check_fits(nodes)


def test_actors_must_leave_a_cpu_for_decoding():
    nodes = [{"CPU": 2.0, "memory": 16 * GIB}]
    ResourceConfig(concurrency=1, num_cpus=1).check_fits(nodes)
    with pytest.raises(ConfigError, match="take 1.5 of the cluster's 2 CPUs and leave none for a decode task"):
        ResourceConfig(concurrency=2, num_cpus=0.75).check_fits(nodes)  # 0.5 CPU left: decoding would never start


@pytest.mark.parametrize("images,cpus,batch", [(192, 2, 32), (100, 2, 32), (10**7, 64, 48), (5, 2, 64), (1000, 16, 1)])
def test_input_blocks_hold_whole_caption_batches(images, cpus, batch):
    rows = ResourceConfig(batch_size=batch, decode_batch_size=16).block_rows(images, cpus)
    assert rows % batch == 0 and rows >= 16
    assert rows < 4096 + batch  # millions of URIs still make many small tasks


def test_input_blocks_keep_every_cpu_decoding():
    assert ResourceConfig(batch_size=32).block_rows(4096, 8) == 128  # 32 blocks for 8 CPUs
    assert ResourceConfig(batch_size=48).block_rows(10**7, 64) == 4128  # 4096 rounded up to whole batches


def test_concurrency_range():
    res = ResourceConfig(concurrency=1, max_concurrency=8).resolve(cluster_cpus=8, cluster_gpus=1)
    assert (res.concurrency, res.max_concurrency) == (1, 8)
    for low, high in [(None, 4), (4, 2)]:
        with pytest.raises(ConfigError, match="MIN:MAX"):
            ResourceConfig(concurrency=low, max_concurrency=high).validate(8, 1)


def test_a_local_model_is_known_by_its_content_not_its_path(tiny_model, tmp_path):
    import shutil

    from captioner.config import model_identity

    copy = shutil.copytree(tiny_model, tmp_path / "elsewhere" / "model")
    (copy / "README.md").write_text("notes do not change captions\n")
    assert model_identity(str(copy)) == model_identity(str(tiny_model)) != str(tiny_model)
    assert model_identity("org/vit-gpt2") == "org/vit-gpt2" and model_identity("s3://b/m/") == "s3://b/m/"
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    assert model_identity(str(copy)) != model_identity(str(tiny_model))


def test_cpu_actors_thread_over_every_core_and_gpu_actors_over_their_own():
    assert ResourceConfig().resolve(cluster_cpus=2, cluster_gpus=0).num_threads == 2
    assert ResourceConfig().resolve(cluster_cpus=16, cluster_gpus=0).num_threads == 8  # 2 actors
    assert ResourceConfig(num_threads=1).resolve(cluster_cpus=2, cluster_gpus=0).num_threads == 1
    assert ResourceConfig().resolve(cluster_cpus=16, cluster_gpus=2).num_threads == 1
