import pytest

from captioner.config import ConfigError, GenerationConfig, InputConfig, ModelConfig, RunConfig, StorageConfig


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_new_tokens": 0}, "--max-new-tokens"),
        ({"num_beams": 0}, "--num-beams"),
        ({"temperature": 0.0}, "--temperature"),
        ({"top_p": 1.5}, "--top-p"),
        ({"fast": "yes"}, "--fast-generation must be one of auto, on, off"),
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


def test_model_settings_are_validated():
    with pytest.raises(ConfigError, match="--dtype must be one of auto, bf16, fp16, fp32"):
        RunConfig(input=InputConfig("in"), output="out", model=ModelConfig(dtype="fp8")).validate()
    with pytest.raises(ConfigError, match="--language-prompt"):
        RunConfig(input=InputConfig("in"), output="out", model=ModelConfig(language_prompt="first")).validate()
