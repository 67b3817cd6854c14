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
from transformers import AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel

from captioner.train.config import language_token
from captioner.train.loop import train
from captioner.train.scenes import COLOURS, LANGUAGES, Background, Scene, Shape, encode, render, scenes
from captioner.train.synth import PARQUET_SCHEMA
from trainkit import data, steps_per_epoch, tiny_config  # noqa: F401 (data is a fixture)

REPO = Path(__file__).resolve().parents[2]
DEMO_MODEL = REPO / "captioner" / "demo_model"


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:  # noqa: F811
    """A tiny captioner trained for three epochs of everything."""
    output = tmp_path_factory.mktemp("trained")
    train(tiny_config(data, output, stage_epochs=(0, 0, 3)))
    return output


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


def test_an_interrupted_run_resumes_from_its_last_checkpoint(data, tmp_path, caplog):  # noqa: F811
    config = tiny_config(data, tmp_path / "out", stage_epochs=(0, 1, 1), stop_after_steps=3)
    assert train(config)["step"] == 3
    checkpoint = tmp_path / "out" / "checkpoints" / "step-00000003"
    assert {"model.safetensors", "trainer_state.pt", "state.json"} <= set(os.listdir(checkpoint))
    assert not (tmp_path / "out" / "model.safetensors").exists()
    (tmp_path / "out" / "checkpoints" / "step-99999999").mkdir()  # torn: no state.json, must be ignored

    with caplog.at_level(logging.INFO, logger="captioner.train.loop"):
        metrics = train(dataclasses.replace(config, stop_after_steps=None))
    assert f"resuming from {checkpoint} at step 3" in caplog.text
    assert metrics["step"] == 2 * steps_per_epoch(config, workers=1) > 3
    last = tmp_path / "out" / "checkpoints" / f"step-{int(metrics['step']):08d}"
    state = torch.load(last / "trainer_state.pt", weights_only=True)
    assert state["scheduler"]["last_epoch"] == metrics["step"]  # the schedule continued, not restarted


def test_a_new_language_is_added_to_a_trained_captioner(trained, tmp_path):
    rows = {"image": [], "caption": [], "lang": []}
    for example in scenes(40, seed=5, one_shape_fraction=1.0):
        shape = example.shapes[0]
        rows["image"].append(encode(render(example, 32), "png"))
        rows["caption"].append(f"{shape.colour} {shape.kind}")  # stand-in captions of a new language
        rows["lang"].append("it")
    pq.write_table(pa.table(rows, schema=PARQUET_SCHEMA), tmp_path / "it.parquet")
    config = tiny_config(tmp_path / "it.parquet", tmp_path / "out", init_model=str(trained), stage_epochs=(0, 1, 0))
    train(config)

    before, after = AutoTokenizer.from_pretrained(trained), AutoTokenizer.from_pretrained(tmp_path / "out")
    assert len(after) == len(before) + 1
    assert all(after.convert_tokens_to_ids(language_token(lang)) == before.convert_tokens_to_ids(language_token(lang))
               for lang in LANGUAGES)
    model = VisionEncoderDecoderModel.from_pretrained(tmp_path / "out", use_safetensors=True)
    assert model.decoder.get_input_embeddings().num_embeddings == len(after)


def test_shipped_demo_model_captions_a_red_circle_in_every_language():
    files = {p.name: p.stat().st_size for p in DEMO_MODEL.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
            "preprocessor_config.json", "README.md"} <= files.keys()
    assert sum(files.values()) < 20 * 2**20
    model = VisionEncoderDecoderModel.from_pretrained(DEMO_MODEL, use_safetensors=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(DEMO_MODEL)
    processor = AutoImageProcessor.from_pretrained(DEMO_MODEL)
    circle = Shape("circle", "red", COLOURS["red"], (0.25, 0.25, 0.75, 0.75))
    scene = Scene((circle,), None, Background("plain", ((150, 150, 150),) * 2, 0.1, 0.0, 0))
    pixels = processor(render(scene, 224), return_tensors="pt").pixel_values
    prompts = torch.tensor([[tokenizer.bos_token_id, tokenizer.convert_tokens_to_ids(language_token(lang))]
                            for lang in LANGUAGES])
    with torch.no_grad():
        generated = model.generate(pixel_values=pixels.repeat(4, 1, 1, 1), decoder_input_ids=prompts,
                                   do_sample=False, num_beams=1)
    captions = [text.strip() for text in tokenizer.batch_decode(generated, skip_special_tokens=True)]
    assert captions == ["a red circle", "un cercle rouge", "ein roter Kreis", "un círculo rojo"]


def test_a_clip_vision_encoder_and_an_mbart50_decoder_train_into_a_captioner(data, tmp_path):  # noqa: F811
    """The seed architecture of CLIP-Vision-mBART50: both parts pretrained (here: tiny and random), joined by
    fresh cross-attention and a projection between their widths, languages chosen by mBART-50's codes."""
    from safetensors.torch import load_file
    from transformers import CLIPVisionConfig, CLIPVisionModel, MBartConfig, MBartForCausalLM

    from captioner.config import GenerationConfig, ModelConfig
    from captioner.models import generate, loading
    from conftest import decode_at, jpeg_bytes
    from families import VISION, clip_processor, mbart50_tokenizer

    encoder, decoder = tmp_path / "clip", tmp_path / "mbart50"
    CLIPVisionModel(CLIPVisionConfig(**VISION)).save_pretrained(encoder)
    clip_processor().save_pretrained(encoder)
    tokenizer = mbart50_tokenizer()
    MBartForCausalLM(MBartConfig(vocab_size=len(tokenizer), d_model=24, decoder_layers=1, decoder_attention_heads=2,
                                 decoder_ffn_dim=37, max_position_embeddings=64)).save_pretrained(decoder)
    tokenizer.save_pretrained(decoder)

    output = tmp_path / "captioner"
    metrics = train(tiny_config(data, output, encoder=str(encoder), decoder=str(decoder), stage_epochs=(1, 0, 0)))
    assert math.isfinite(metrics["val_loss"])
    trained = load_file(str(output / "model.safetensors"))
    assert "enc_to_dec_proj.weight" in trained  # 32-wide encoder, 24-wide decoder
    before = load_file(str(decoder / "model.safetensors"))
    self_attention = next(k for k in before if "self_attn.k_proj.weight" in k)
    assert torch.equal(trained["decoder." + self_attention], before[self_attention])  # stage 1: decoder frozen

    captioner = loading.load(ModelConfig(name=str(output)))
    assert captioner.info.languages["fr"] == (tokenizer.eos_token_id, tokenizer.lang_code_to_id["fr_XX"])
    pixels = decode_at(jpeg_bytes(3, size=(40, 40)), captioner.info.image.resize)[None]
    out = generate.caption(captioner, pixels, [["en", "fr"]], GenerationConfig(max_new_tokens=4))
    assert sorted(out[0]) == ["en", "fr"]
