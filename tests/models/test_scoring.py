import numpy as np
import pytest
import torch

from captioner.config import GenerationConfig
from captioner.models import generate, scoring
from conftest import decode_at, jpeg_bytes, normalised


def test_greedy_scores_from_the_search_equal_a_teacher_forced_pass(demo, scenes):
    """Greedy search scores from the logits it kept; beam search scores by a second pass: same definition."""
    ours = generate.caption(demo, scenes, [["de"]] * len(scenes), GenerationConfig(max_new_tokens=32))
    x = normalised(demo, scenes)
    prompt = torch.tensor([demo.info.languages["de"]] * len(scenes))
    with torch.inference_mode():
        sequences = demo.model.generate(pixel_values=x, decoder_input_ids=prompt, max_new_tokens=32)
        logits = demo.model(pixel_values=x, decoder_input_ids=sequences[:, :-1]).logits
        teacher_forced = scoring.mean_logprob(logits, sequences, 2, [demo.tokenizer.eos_token_id])
    assert [r["de"].score for r in ours] == pytest.approx(teacher_forced, abs=1e-4)


def test_score_is_mean_token_logprob(captioner, pixels):
    result = generate.caption(captioner, pixels[:1], [["en"]], GenerationConfig(max_new_tokens=6))[0]["en"]
    tokens = captioner.tokenizer(result.text, add_special_tokens=False).input_ids
    ids = [captioner.model.config.decoder_start_token_id, *tokens]
    with torch.no_grad():
        logits = captioner.model(
            pixel_values=normalised(captioner, pixels[:1]), decoder_input_ids=torch.tensor([ids])
        ).logits[0]
    logprobs = torch.log_softmax(logits, dim=-1)
    expected = np.mean([logprobs[i, tok].item() for i, tok in enumerate(tokens)])  # no EOS: it ran to the cap
    assert result.score == pytest.approx(expected, abs=1e-4)
    assert result.score < 0





def test_clip_score_equals_a_direct_computation(scorer, tiny_clip):
    """Same model, same image, same text: 2.5 * max(cosine, 0) computed by hand from transformers' API."""
    from transformers import AutoImageProcessor

    data = jpeg_bytes(5, size=(32, 32))
    pixels = decode_at(data, scorer.image.resize)[None]
    text = "a red circle above a blue square"
    ours = scoring.clip_scores(scorer, pixels, [text])[0]

    processor = AutoImageProcessor.from_pretrained(tiny_clip)
    from PIL import Image
    import io
    x = processor(images=Image.open(io.BytesIO(data)).convert("RGB"), return_tensors="pt").pixel_values
    tokens = scorer.tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        image = scorer.model.get_image_features(pixel_values=x)
        words = scorer.model.get_text_features(**tokens)
    image = getattr(image, "pooler_output", image)
    words = getattr(words, "pooler_output", words)
    expected = 2.5 * max(torch.nn.functional.cosine_similarity(image, words).item(), 0.0)
    assert ours == pytest.approx(expected, abs=1e-5)


def test_best_of_n_keeps_the_best_clip_candidate(captioner, scorer, pixels):
    settings = GenerationConfig(max_new_tokens=5, num_beams=1)
    best = generate.caption(captioner, pixels, [["en"]] * 4, settings, num_candidates=3, scorer=scorer,
                            clip_pixels=pixels)
    for i, result in enumerate(best):
        chosen = result["en"]
        assert chosen.candidates == 3
        beams = captioner.model.generate(pixel_values=normalised(captioner, pixels[i:i + 1]), max_new_tokens=5,
                                         num_beams=3, num_return_sequences=3)
        texts = [t.strip() for t in captioner.tokenizer.batch_decode(beams, skip_special_tokens=True)]
        clip = scoring.clip_scores(scorer, np.repeat(pixels[i:i + 1], 3, axis=0), texts)
        assert chosen.text == texts[int(np.argmax(clip))]
        assert chosen.clip_score == pytest.approx(max(clip), abs=1e-5)
