"""Which language a caption is written in, so that a caption asked for in French but written in English shows.

py3langid (langid.py's naive Bayes model over byte n-grams, shipped in its wheel; numpy its only dependency) was
picked by ``benchmarks/langid.py``. Its confidence is a probability scaled to the text's length, which tells a
guess on three words from an answer: held to at most 1% of the demo model's captions named wrong, it still names
the most of them right after lingua, and lingua costs 20 times the wheel (95 MB), 10 times the start (8 s) and
4 times the memory (540 MiB) in every process that writes, for a few points more on three-word captions.
"""

import copy
import functools
from collections.abc import Iterable, Sequence

from py3langid.langid import MODEL_FILE, LanguageIdentifier

# What the identifier chooses among, besides the run's own languages: widely written languages, without the
# identifier's rarer neighbours of them (Galician, Occitan, Afrikaans...), which otherwise claim short captions.
LANGUAGES = frozenset("ar bg bn ca cs da de el en es et fa fi fr he hi hr hu id it ja ko lt lv nl no pl pt ro ru sk "
                      "sl sr sv th tr uk vi zh".split())
# Below this the text is too short to tell, and the language is left null: on the demo model's captions of two or
# three words, a guess with less confidence was wrong most times; at 0.5, 0.4% of them are named wrong
# (benchmarks/langid.py, where py3langid's floor for at most 1% wrong came out at 0.48).
MIN_CONFIDENCE = 0.5


@functools.cache
def _model() -> LanguageIdentifier:
    """Every language the model knows, loaded once per process (about a second)."""
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


@functools.cache
def _identifier(languages: frozenset[str]) -> LanguageIdentifier:
    """The model choosing among ``languages`` only; restricting builds new tables, so the full model stays whole."""
    identifier = copy.copy(_model())
    identifier.set_languages(sorted(languages))
    return identifier


def unknown(languages: Iterable[str]) -> list[str]:
    """Those of ``languages`` the identifier cannot recognise: their rows would read as some other language."""
    return sorted(set(languages) - set(_model().labels))


def identify(texts: Sequence[str | None], languages: Iterable[str] = ()) -> tuple[list[str | None], list[float | None]]:
    """The ISO 639-1 language of each text and the identifier's confidence in it, in [0, 1].

    ``languages`` (a run's) join LANGUAGES as choices, so a language the run asked for can always be recognised,
    and no other one is ever hidden. A text without a letter gets (None, None); a text too short to tell, None and
    its best guess's confidence.
    """
    asked = set(languages)
    identifier = _identifier(frozenset(LANGUAGES | (asked - set(unknown(asked)))))
    found: list[str | None] = []
    confidence: list[float | None] = []
    for text in texts:
        if not text or not any(c.isalpha() for c in text):
            found.append(None)
            confidence.append(None)
            continue
        lang, p = identifier.classify(text)
        found.append(lang if p >= MIN_CONFIDENCE else None)
        confidence.append(min(max(float(p), 0.0), 1.0))
    return found, confidence
