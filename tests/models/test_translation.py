import numpy as np
import pytest
import torch

from captioner.config import GenerationConfig, ModelConfig
from captioner.models import loading, translation
from captioner.models.loading import ModelError
from families import first_code_id, mbart50_tokenizer


@pytest.fixture(scope="module")
def mbart50_m2m(tmp_path_factory):
    """A random mBART-50 many-to-many translator with an mBART-50 tokenizer trained here."""
    from transformers import MBartConfig, MBartForConditionalGeneration

    path = tmp_path_factory.mktemp("mbart50-m2m")
    tokenizer = mbart50_tokenizer()
    torch.manual_seed(5)
    model = MBartForConditionalGeneration(MBartConfig(
        vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=2,
        forced_eos_token_id=2))
    with torch.no_grad():  # translations of words, not of language codes
        model.final_logits_bias[0, first_code_id(tokenizer):] = -10.0
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_translation_is_marian_generate_with_a_score(translator):
    """Beam search (the fixture's generation config asks for 3 beams), as a plain ``model.generate`` does it."""
    assert translator.model.generation_config.num_beams == 3
    texts = ["a red circle", "a green star above a blue square"]
    out = translation.translate(translator, texts, "en", "fr", GenerationConfig(max_new_tokens=3))
    inputs = translator.tokenizer(texts, return_tensors="pt", padding=True)
    reference = translator.tokenizer.batch_decode(translator.model.generate(**inputs, max_new_tokens=6),
                                                  skip_special_tokens=True)
    assert [c.text for c in out] == [t.strip() for t in reference]
    assert all(c.text and np.isfinite(c.score) and c.score < 0 for c in out)
    assert {c.producer for c in out} == {translator.name}


def test_mbart50_many_to_many_gets_its_source_and_its_target_forced(mbart50_m2m):
    texts = ["a red circle", "a green star above a blue square"]
    loaded = loading.load_translator(ModelConfig(name=str(mbart50_m2m)))
    out = translation.translate(loaded, texts, "en", "de", GenerationConfig(max_new_tokens=3))
    tokenizer = loaded.tokenizer
    tokenizer.src_lang = "en_XX"
    inputs = tokenizer(texts, return_tensors="pt", padding=True)
    reference = loaded.model.generate(**inputs, forced_bos_token_id=tokenizer.lang_code_to_id["de_DE"],
                                      max_new_tokens=6)
    assert (reference[:, 1] == tokenizer.lang_code_to_id["de_DE"]).all()  # the target's code, forced first
    assert [c.text for c in out] == [t.strip() for t in tokenizer.batch_decode(reference, skip_special_tokens=True)]
    assert all(c.text and np.isfinite(c.score) for c in out)


def test_translators_that_would_write_the_wrong_language_are_refused_by_name(mbart50_m2m, tiny_marian):
    from transformers import NllbTokenizer

    with pytest.raises(ValueError, match="NLLB"):
        translation.direction(NllbTokenizer(), "en", "fr")
    with pytest.raises(ModelError, match="--translate xx=.*no language code for xx"):
        translation.check(ModelConfig(name=str(mbart50_m2m)), None, "en", "xx")
    translation.check(ModelConfig(name=str(mbart50_m2m)), None, "en", "fr")
    assert translation.direction(loading.load_tokenizer(ModelConfig(name=str(tiny_marian))), "en", "fr") == \
        translation.Direction()  # a one-pair Marian model needs nothing
