from captioner.config import GenerationConfig, InputConfig, ModelConfig, RunConfig
from captioner.fingerprint import fingerprint, fingerprints, model_identity


def test_fingerprints_follow_what_changes_each_language():
    base = RunConfig(input=InputConfig("in"), output="out", languages=("en", "fr"))
    moved = RunConfig(input=InputConfig("elsewhere"), output="out2", languages=("en", "fr"), mode="append")
    other_model = RunConfig(input=InputConfig("in"), output="out", model=ModelConfig(name="other"))
    beams = RunConfig(input=InputConfig("in"), output="out", generation=GenerationConfig(num_beams=4))
    translated = RunConfig(input=InputConfig("in"), output="out", languages=("en", "fr", "de"),
                           translate=(("fr", "opus-fr"), ("de", "opus-de")))
    assert fingerprints(base) == fingerprints(moved)
    assert len({fingerprints(base)["en"], fingerprints(other_model)["en"], fingerprints(beams)["en"]}) == 3
    assert fingerprints(translated)["en"] == fingerprints(base)["en"]  # adding languages leaves en alone
    assert fingerprints(translated)["fr"] != fingerprints(base)["fr"]  # native fr and translated fr differ
    assert fingerprint(base) != fingerprint(translated)
    for fast in ("on", "off"):  # the same tokens either way: output written by one resumes with the other
        same = RunConfig(input=InputConfig("in"), output="out", languages=("en", "fr"),
                         generation=GenerationConfig(fast=fast))
        assert fingerprints(same) == fingerprints(base)


def test_a_local_model_is_known_by_its_content_not_its_path(tiny_model, tmp_path):
    import shutil

    copy = shutil.copytree(tiny_model, tmp_path / "elsewhere" / "model")
    (copy / "README.md").write_text("notes do not change captions\n")
    assert model_identity(str(copy)) == model_identity(str(tiny_model)) != str(tiny_model)
    assert model_identity("org/vit-gpt2") == "org/vit-gpt2" and model_identity("s3://b/m/") == "s3://b/m/"
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    assert model_identity(str(copy)) != model_identity(str(tiny_model))


def test_dtype_and_language_prompt_count_only_when_set():
    base = RunConfig(input=InputConfig("in"), output="out")
    assert fingerprints(base) == fingerprints(RunConfig(input=InputConfig("in"), output="out",
                                                        model=ModelConfig(dtype="auto", language_prompt="auto")))
    assert len({fingerprints(RunConfig(input=InputConfig("in"), output="out", model=ModelConfig(**kw)))["en"]
                for kw in ({}, {"dtype": "bf16"}, {"dtype": "fp16"}, {"language_prompt": "start"})}) == 4


def test_caption_style_prompt_and_image_size_count_only_when_set():
    def of(**kw):
        return fingerprints(RunConfig(input=InputConfig("in"), output="out", model=ModelConfig(**kw)))["en"]

    assert of() == of(caption_style="short", prompt=None, image_size=None)  # outputs from before keep resuming
    assert len({of(), of(caption_style="detailed"), of(prompt="Describe it."), of(image_size=(448, 448)),
                of(image_size=(448, 336))}) == 5
