import dataclasses
import json
import logging
import math
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from transformers import (
    AutoImageProcessor,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    ViTConfig,
    ViTModel,
    VisionEncoderDecoderModel,
)

from captioner import synth, train
from captioner.train import TrainConfig, corpus_bleu, language_token

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "captioner" / "demo_model"


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
    examples = train.load_examples(config.data, config.image_size, 2, config.val_fraction)
    return int((~examples.val).sum()) // workers // config.batch_size


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.parquet"
    synth.write_parquet(str(path), 96, seed=1, size=32)
    return path


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    """A tiny captioner trained for three epochs of everything."""
    output = tmp_path_factory.mktemp("trained")
    train.train(tiny_config(data, output, stage_epochs=(0, 0, 3)))
    return output


def test_bleu_on_known_strings():
    assert corpus_bleu(["a red circle"], ["a red circle"]) == pytest.approx([100.0] * 4)
    # 5/6 unigrams, 3/5 bigrams, 1/4 trigrams and 0/3 four-grams match; equal lengths, no brevity penalty.
    scores = corpus_bleu(["the cat sat on the mat"], ["the cat is on the mat"])
    assert scores == pytest.approx([100 * 5 / 6, 100 * math.sqrt(0.5), 50.0, 0.0])
    # Too short: every n-gram matches, but the brevity penalty is exp(1 - 6/2).
    assert corpus_bleu(["the cat"], ["the cat sat on the mat"])[:2] == pytest.approx([100 * math.exp(-2)] * 2)
    # Corpus BLEU sums n-gram counts over sentences: p1 = 4/5, p2 = p3 = p4 = 1.
    assert corpus_bleu(["a b c d", "x"], ["a b c d", "y"])[3] == pytest.approx(100 * 0.8**0.25)


def test_tokenizer_round_trips_accents_and_selects_languages():
    captions = [synth.caption(s, lang) for s in synth.scenes(40, seed=0) for lang in synth.LANGUAGES]
    tokenizer = train.train_tokenizer(captions, synth.LANGUAGES, vocab_size=300)
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token) == (
        "<s>", "</s>", "<pad>", "<unk>")
    text = "«é ü ß ñ» ein weißer Stern über einer grünen Raute"
    assert tokenizer.decode(tokenizer(text).input_ids) == text
    fr = tokenizer.convert_tokens_to_ids("<|fr|>")
    ids = [tokenizer.bos_token_id, fr, *tokenizer("une étoile verte").input_ids, tokenizer.eos_token_id]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "une étoile verte"
    assert train.add_languages(tokenizer, ["fr", "it"]) == 1
    assert {language_token(lang) for lang in (*synth.LANGUAGES, "it")} <= set(tokenizer.all_special_tokens)


def test_config_errors_say_what_to_change(tmp_path):
    with pytest.raises(ValueError, match="stage_epochs"):
        tiny_config(tmp_path, tmp_path, stage_epochs=(0, 0, 0))
    with pytest.raises(ValueError, match="init_model or encoder/decoder"):
        tiny_config(tmp_path, tmp_path, init_model="m", encoder="e")
    with pytest.raises(ValueError, match="pretrains a fresh encoder"):
        tiny_config(tmp_path, tmp_path, encoder="e", encoder_pretrain_epochs=2)


def test_training_lowers_the_loss_and_saves_a_loadable_model(trained):
    history = json.loads((trained / "training_history.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(trained)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["val_loss"] < history[0]["val_loss"] < math.log(len(tokenizer))
    assert history[-1]["val_perplexity"] == pytest.approx(math.exp(history[-1]["val_loss"]))
    assert {f"bleu{n}" for n in range(1, 5)} <= history[-1].keys()
    model = VisionEncoderDecoderModel.from_pretrained(trained, use_safetensors=True)
    for config in (model.config, model.generation_config):
        assert config.decoder_start_token_id == tokenizer.bos_token_id
        assert (config.eos_token_id, config.pad_token_id) == (tokenizer.eos_token_id, tokenizer.pad_token_id)
    assert AutoImageProcessor.from_pretrained(trained).size == {"height": 32, "width": 32}


def test_pretrained_encoder_and_decoder_are_kept_and_only_cross_attention_is_new(data, tmp_path):
    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                             num_attention_heads=2, intermediate_size=64))
    vit.save_pretrained(tmp_path / "vit")
    captions = pq.read_table(data, columns=["caption"]).column("caption").to_pylist()
    tokenizer = train.train_tokenizer(captions, languages=[], vocab_size=300)  # a "pretrained" one: no languages
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=48, n_embd=32, n_layer=1, n_head=2))
    gpt2.save_pretrained(tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    config = tiny_config(data, tmp_path / "out", encoder=str(tmp_path / "vit"), decoder=str(tmp_path / "gpt2"),
                         stage_epochs=(1, 0, 0))

    tokenizer, _ = train.prepare_output(config)
    torch.manual_seed(config.seed)  # as run_training does, so the new rows and cross-attention start alike
    model = train.build_model(config, tokenizer)
    assert len(tokenizer) == gpt2.config.vocab_size + 4  # the four language tokens were added
    for name, weight in vit.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[name], weight), name
    decoder = model.decoder.state_dict()
    for name, weight in gpt2.state_dict().items():
        assert torch.equal(decoder[name][: weight.shape[0]], weight), name  # embeddings grew by new rows only
    assert torch.equal(model.decoder.lm_head.weight[: gpt2.config.vocab_size], gpt2.lm_head.weight)
    new = {name for name in decoder if name not in gpt2.state_dict()}
    assert new and all("crossattention" in name or "ln_cross_attn" in name for name in new)

    train.run_training(config)
    trained = VisionEncoderDecoderModel.from_pretrained(config.output_dir, use_safetensors=True)
    trained_weights = dict(trained.named_parameters())
    for name, weight in model.named_parameters():
        moved = not torch.equal(trained_weights[name], weight)
        assert moved == any(part in name for part in train.CROSS_ATTENTION_PARTS), name


def test_encoder_pretraining_names_synthetic_concepts_and_seeds_the_captioner(data, tmp_path):
    config = tiny_config(data, tmp_path / "out", encoder_pretrain_epochs=1)
    train.prepare_output(config)
    pretrained = train.pretrain_encoder(config)
    assert pretrained.encoder == str(tmp_path / "out" / "checkpoints" / "encoder")
    assert pretrained.encoder_pretrain_epochs == 0
    encoder = ViTModel.from_pretrained(pretrained.encoder)
    model = train.build_model(pretrained, AutoTokenizer.from_pretrained(config.output_dir))
    for name, weight in encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[name], weight), name
    assert train.pretrain_encoder(config) == pretrained  # already saved: a rerun skips the work


def test_encoder_pretraining_refuses_captions_without_synthetic_concepts(tmp_path):
    image = synth.encode(synth.render(next(synth.scenes(1, seed=0)), 32), "png")
    rows = {"image": [image] * 20, "caption": ["a photo"] * 20, "lang": ["en"] * 20}
    pq.write_table(pa.table(rows, schema=synth.PARQUET_SCHEMA), tmp_path / "photos.parquet")
    config = tiny_config(tmp_path / "photos.parquet", tmp_path / "out", encoder_pretrain_epochs=1, val_fraction=0.5)
    train.prepare_output(config)
    with pytest.raises(ValueError, match="pass a pretrained encoder"):
        train.pretrain_encoder(config)


def test_an_interrupted_run_resumes_from_its_last_checkpoint(data, tmp_path, caplog):
    config = tiny_config(data, tmp_path / "out", stage_epochs=(0, 1, 1), stop_after_steps=3)
    assert train.train(config)["step"] == 3
    checkpoint = tmp_path / "out" / "checkpoints" / "step-00000003"
    assert {"model.safetensors", "trainer_state.pt", "state.json"} <= set(os.listdir(checkpoint))
    assert not (tmp_path / "out" / "model.safetensors").exists()
    (tmp_path / "out" / "checkpoints" / "step-99999999").mkdir()  # torn: no state.json, must be ignored

    with caplog.at_level(logging.INFO, logger="captioner.train"):
        metrics = train.train(dataclasses.replace(config, stop_after_steps=None))
    assert f"resuming from {checkpoint} at step 3" in caplog.text
    assert metrics["step"] == 2 * steps_per_epoch(config, workers=1) > 3
    last = tmp_path / "out" / "checkpoints" / f"step-{int(metrics['step']):08d}"
    state = torch.load(last / "trainer_state.pt", weights_only=True)
    assert state["scheduler"]["last_epoch"] == metrics["step"]  # the schedule continued, not restarted


def test_training_reads_a_folder_of_parquet_files_on_s3(s3, s3_server):
    fs, bucket = s3
    options = {"endpoint_url": s3_server}
    synth.write_parquet(f"s3://{bucket}/train/part-0.parquet", 5, seed=0, size=32, options=options)
    synth.write_parquet(f"s3://{bucket}/train/part-1.parquet", 3, seed=1, size=32, options=options)
    examples = train.load_examples(f"s3://{bucket}/train", 16, 2, val_fraction=0.5, options=options)
    assert examples.pixels.shape == (8, 3, 16, 16)
    assert examples.langs == ["en", "fr", "de", "es", "en", "en", "fr", "de"]


def test_a_new_language_is_added_to_a_trained_captioner(trained, tmp_path):
    rows = {"image": [], "caption": [], "lang": []}
    for example in synth.scenes(40, seed=5, one_shape_fraction=1.0):
        shape = example.shapes[0]
        rows["image"].append(synth.encode(synth.render(example, 32), "png"))
        rows["caption"].append(f"{shape.colour} {shape.kind}")  # stand-in captions of a new language
        rows["lang"].append("it")
    pq.write_table(pa.table(rows, schema=synth.PARQUET_SCHEMA), tmp_path / "it.parquet")
    config = tiny_config(tmp_path / "it.parquet", tmp_path / "out", init_model=str(trained), stage_epochs=(0, 1, 0))
    train.train(config)

    before, after = AutoTokenizer.from_pretrained(trained), AutoTokenizer.from_pretrained(tmp_path / "out")
    assert len(after) == len(before) + 1
    assert all(after.convert_tokens_to_ids(language_token(lang)) == before.convert_tokens_to_ids(language_token(lang))
               for lang in synth.LANGUAGES)
    model = VisionEncoderDecoderModel.from_pretrained(tmp_path / "out", use_safetensors=True)
    assert model.decoder.get_input_embeddings().num_embeddings == len(after)


@pytest.mark.slow
def test_ray_train_runs_two_cpu_workers(data, tmp_path, local_ray):
    """On the suite's local Ray (2 CPUs); workers import captioner from the installed checkout."""
    config = tiny_config(data, tmp_path / "out", stage_epochs=(0, 1, 1))
    metrics = train.train_distributed(config, num_workers=2)
    assert metrics["step"] == 2 * steps_per_epoch(config, workers=2)  # two workers shared each epoch
    assert metrics["val_loss"] > 0 and "bleu4" in metrics
    assert (tmp_path / "out" / "model.safetensors").exists()


def test_shipped_demo_model_captions_a_red_circle_in_every_language():
    files = {p.name: p.stat().st_size for p in DEMO_MODEL.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
            "preprocessor_config.json", "README.md"} <= files.keys()
    assert sum(files.values()) < 20 * 2**20
    model = VisionEncoderDecoderModel.from_pretrained(DEMO_MODEL, use_safetensors=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(DEMO_MODEL)
    processor = AutoImageProcessor.from_pretrained(DEMO_MODEL)
    circle = synth.Shape("circle", "red", synth.COLOURS["red"], (0.25, 0.25, 0.75, 0.75))
    scene = synth.Scene((circle,), None, synth.Background("plain", ((150, 150, 150),) * 2, 0.1, 0.0, 0))
    pixels = processor(synth.render(scene, 224), return_tensors="pt").pixel_values
    prompts = torch.tensor([[tokenizer.bos_token_id, tokenizer.convert_tokens_to_ids(language_token(lang))]
                            for lang in synth.LANGUAGES])
    with torch.no_grad():
        generated = model.generate(pixel_values=pixels.repeat(4, 1, 1, 1), decoder_input_ids=prompts,
                                   do_sample=False, num_beams=1)
    captions = [text.strip() for text in tokenizer.batch_decode(generated, skip_special_tokens=True)]
    assert captions == ["a red circle", "un cercle rouge", "ein roter Kreis", "un círculo rojo"]
