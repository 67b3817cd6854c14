import math

import pytest

from captioner.train.metrics import bleu


def test_bleu_on_known_strings():
    assert bleu(["a red circle"], ["a red circle"]) == pytest.approx([100.0] * 4)
    # 5/6 unigrams, 3/5 bigrams, 1/4 trigrams and 0/3 four-grams match; equal lengths, no brevity penalty.
    scores = bleu(["the cat sat on the mat"], ["the cat is on the mat"])
    assert scores == pytest.approx([100 * 5 / 6, 100 * math.sqrt(0.5), 50.0, 0.0])
    # Too short: every n-gram matches, but the brevity penalty is exp(1 - 6/2).
    assert bleu(["the cat"], ["the cat sat on the mat"])[:2] == pytest.approx([100 * math.exp(-2)] * 2)
    # Corpus BLEU sums n-gram counts over sentences: p1 = 4/5, p2 = p3 = p4 = 1.
    assert bleu(["a b c d", "x"], ["a b c d", "y"])[3] == pytest.approx(100 * 0.8**0.25)
