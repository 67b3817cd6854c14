"""Corpus BLEU of generated captions, scored by sacrebleu so the numbers compare with published ones."""

from __future__ import annotations

from collections.abc import Sequence

from sacrebleu.metrics import BLEU

BLEU_ORDER = 4  # BLEU-1..4


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> list[float]:
    """Cumulative corpus BLEU-1..4 in percent of whitespace-tokenised hypotheses against one reference each.

    Uniform weights, brevity penalty, no smoothing; where no n-grams of some order exist at all,
    BLEU-n keeps the highest order there is (sacrebleu's effective order).
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:  # bleu_samples=0; sacrebleu refuses an empty corpus
        return [0.0] * BLEU_ORDER
    return [
        BLEU(tokenize="none", smooth_method="none", effective_order=True, max_ngram_order=n)
        .corpus_score(list(hypotheses), [list(references)])
        .score
        for n in range(1, BLEU_ORDER + 1)
    ]
