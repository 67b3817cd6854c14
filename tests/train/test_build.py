import pyarrow.parquet as pq
import torch
from transformers import GPT2Config, GPT2LMHeadModel, ViTConfig, ViTModel, VisionEncoderDecoderModel

from captioner.train.build import CROSS_ATTENTION_PARTS, add_languages, build_model, prepare_output, train_tokenizer
from captioner.train.config import language_token
from captioner.train.grammar import caption
from captioner.train.loop import run_training
from captioner.train.scenes import LANGUAGES, scenes
from trainkit import data, tiny_config  # noqa: F401 (data is a fixture)


def test_tokenizer_round_trips_accents_and_selects_languages():
    captions = [caption(s, lang) for s in scenes(40, seed=0) for lang in LANGUAGES]
    tokenizer = train_tokenizer(captions, LANGUAGES, vocab_size=300)
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token) == (
        "<s>", "</s>", "<pad>", "<unk>")
    text = "«é ü ß ñ» ein weißer Stern über einer grünen Raute"
    assert tokenizer.decode(tokenizer(text).input_ids) == text
    fr = tokenizer.convert_tokens_to_ids("<|fr|>")
    ids = [tokenizer.bos_token_id, fr, *tokenizer("une étoile verte").input_ids, tokenizer.eos_token_id]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "une étoile verte"
    assert add_languages(tokenizer, ["fr", "it"]) == 1
    assert {language_token(lang) for lang in (*LANGUAGES, "it")} <= set(tokenizer.all_special_tokens)


def test_pretrained_encoder_and_decoder_are_kept_and_only_cross_attention_is_new(data, tmp_path):  # noqa: F811
    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                             num_attention_heads=2, intermediate_size=64))
    vit.save_pretrained(tmp_path / "vit")
    captions = pq.read_table(data, columns=["caption"]).column("caption").to_pylist()
    tokenizer = train_tokenizer(captions, languages=[], vocab_size=300)  # a "pretrained" one: no languages
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=48, n_embd=32, n_layer=1, n_head=2))
    gpt2.save_pretrained(tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    config = tiny_config(data, tmp_path / "out", encoder=str(tmp_path / "vit"), decoder=str(tmp_path / "gpt2"),
                         stage_epochs=(1, 0, 0))

    tokenizer, _ = prepare_output(config)
    torch.manual_seed(config.seed)  # as run_training does, so the new rows and cross-attention start alike
    model = build_model(config, tokenizer)
    assert len(tokenizer) == gpt2.config.vocab_size + 4  # the four language tokens were added
    for name, weight in vit.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[name], weight), name
    decoder = model.decoder.state_dict()
    for name, weight in gpt2.state_dict().items():
        assert torch.equal(decoder[name][: weight.shape[0]], weight), name  # embeddings grew by new rows only
    assert torch.equal(model.decoder.lm_head.weight[: gpt2.config.vocab_size], gpt2.lm_head.weight)
    new = {name for name in decoder if name not in gpt2.state_dict()}
    assert new and all("crossattention" in name or "ln_cross_attn" in name for name in new)

    run_training(config)
    trained = VisionEncoderDecoderModel.from_pretrained(config.output_dir, use_safetensors=True)
    trained_weights = dict(trained.named_parameters())
    for name, weight in model.named_parameters():
        moved = not torch.equal(trained_weights[name], weight)
        assert moved == any(part in name for part in CROSS_ATTENTION_PARTS), name
