"""The one correct caption of a synthetic scene in English, French, German or Spanish, and its words read back.

Captions follow each language's agreement rules (gender, German case), so the demo model learns real
grammar; `named` reads the colour and shape words back so a generated caption can be checked exactly.
"""

from __future__ import annotations

import functools
import itertools
import re

from .scenes import COLOURS, LANGUAGES, RELATIONS, SHAPES, Scene, Shape

# What a caption says, by English names: ((colour, shape),) or ((colour, shape), relation, (colour, shape)).
Meaning = tuple

_FR_NOUNS = {"circle": ("cercle", "m"), "square": ("carré", "m"), "triangle": ("triangle", "m"),
             "star": ("étoile", "f"), "diamond": ("losange", "m")}
_FR_COLOURS = {"red": ("rouge", "rouge"), "green": ("vert", "verte"), "blue": ("bleu", "bleue"),
               "yellow": ("jaune", "jaune"), "orange": ("orange", "orange"), "purple": ("violet", "violette"),
               "black": ("noir", "noire"), "white": ("blanc", "blanche")}
# Each is followed by "de", which elides before the indefinite article: "au-dessus d'un".
_FR_RELATIONS = {"above": "au-dessus", "below": "en dessous", "left": "à gauche", "right": "à droite"}

_ES_NOUNS = {"circle": ("círculo", "m"), "square": ("cuadrado", "m"), "triangle": ("triángulo", "m"),
             "star": ("estrella", "f"), "diamond": ("rombo", "m")}
_ES_COLOURS = {"red": ("rojo", "roja"), "green": ("verde", "verde"), "blue": ("azul", "azul"),
               "yellow": ("amarillo", "amarilla"), "orange": ("naranja", "naranja"),
               "purple": ("morado", "morada"), "black": ("negro", "negra"), "white": ("blanco", "blanca")}
_ES_RELATIONS = {"above": "encima de", "below": "debajo de", "left": "a la izquierda de", "right": "a la derecha de"}

_DE_NOUNS = {"circle": ("Kreis", "m"), "square": ("Quadrat", "n"), "triangle": ("Dreieck", "n"),
             "star": ("Stern", "m"), "diamond": ("Raute", "f")}
_DE_COLOURS = {"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb", "orange": "orangefarben",
               "purple": "violett", "black": "schwarz", "white": "weiß"}
# Indefinite article and adjective ending (mixed declension) by case and gender.
_DE_DECLENSION = {
    ("nom", "m"): ("ein", "er"), ("nom", "n"): ("ein", "es"), ("nom", "f"): ("eine", "e"),
    ("dat", "m"): ("einem", "en"), ("dat", "n"): ("einem", "en"), ("dat", "f"): ("einer", "en"),
}
# All four prepositions take the dative here.
_DE_RELATIONS = {"above": "über", "below": "unter", "left": "links von", "right": "rechts von"}

_EN_RELATIONS = {"above": "above", "below": "below", "left": "to the left of", "right": "to the right of"}


def _noun_phrase(shape: Shape, lang: str, dative: bool = False) -> str:
    """ "a red circle", "une étoile verte", "einem blauen Quadrat" (German needs the case)."""
    if lang == "en":
        return f"{'an' if shape.colour[0] in 'aeiou' else 'a'} {shape.colour} {shape.kind}"
    if lang == "de":
        noun, gender = _DE_NOUNS[shape.kind]
        article, ending = _DE_DECLENSION["dat" if dative else "nom", gender]
        return f"{article} {_DE_COLOURS[shape.colour]}{ending} {noun}"
    nouns, colours = (_FR_NOUNS, _FR_COLOURS) if lang == "fr" else (_ES_NOUNS, _ES_COLOURS)
    noun, gender = nouns[shape.kind]
    masculine, feminine = colours[shape.colour]
    return f"un {noun} {masculine}" if gender == "m" else f"{'une' if lang == 'fr' else 'una'} {noun} {feminine}"


def caption(scene: Scene, lang: str) -> str:
    """The one correct caption of `scene` in `lang`, e.g. "ein roter Kreis über einem blauen Quadrat"."""
    if lang not in LANGUAGES:
        raise ValueError(f"unknown language {lang!r}; synthetic captions exist for {', '.join(LANGUAGES)}")
    first = _noun_phrase(scene.shapes[0], lang)
    if scene.relation is None:
        return first
    second = _noun_phrase(scene.shapes[1], lang, dative=True)
    if lang == "fr":
        return f"{first} {_FR_RELATIONS[scene.relation]} d'{second}"
    relations = {"en": _EN_RELATIONS, "de": _DE_RELATIONS, "es": _ES_RELATIONS}[lang]
    return f"{first} {relations[scene.relation]} {second}"


def vocabulary(lang: str) -> tuple[dict[str, frozenset[str]], dict[str, frozenset[str]]]:
    """Every lower-case word form of each colour and each shape in `lang`, to check what a caption names."""
    if lang == "en":
        colours = {c: frozenset({c}) for c in COLOURS}
        shapes = {s: frozenset({s}) for s in SHAPES}
    elif lang in ("fr", "es"):
        colour_table, noun_table = (_FR_COLOURS, _FR_NOUNS) if lang == "fr" else (_ES_COLOURS, _ES_NOUNS)
        colours = {c: frozenset(forms) for c, forms in colour_table.items()}
        shapes = {s: frozenset({noun}) for s, (noun, _) in noun_table.items()}
    elif lang == "de":
        endings = {ending for _, ending in _DE_DECLENSION.values()}
        colours = {c: frozenset(stem + e for e in endings) for c, stem in _DE_COLOURS.items()}
        shapes = {s: frozenset({noun.lower()}) for s, (noun, _) in _DE_NOUNS.items()}
    else:
        raise ValueError(f"unknown language {lang!r}; synthetic captions exist for {', '.join(LANGUAGES)}")
    return colours, shapes


def named(text: str, lang: str) -> tuple[set[str], set[str]]:
    """The colours and shapes that a caption in `lang` mentions, by their English names."""
    words = set(re.findall(r"\w+", text.lower()))
    colours, shapes = vocabulary(lang)
    return ({c for c, forms in colours.items() if forms & words}, {s for s, forms in shapes.items() if forms & words})


@functools.cache
def _meanings(lang: str) -> dict[str, Meaning]:
    """Every caption the grammar can write in `lang`, with what it says: 6,440 short strings per language."""
    things = [(colour, kind) for colour in COLOURS for kind in SHAPES]
    shape = {t: Shape(t[1], t[0], COLOURS[t[0]], (0.0, 0.0, 0.0, 0.0)) for t in things}
    table = {caption(Scene((shape[t],), None, None), lang): (t,) for t in things}
    for first, relation, second in itertools.product(things, RELATIONS, things):
        table[caption(Scene((shape[first], shape[second]), relation, None), lang)] = (first, relation, second)
    return table


def parse(text: str, lang: str) -> Meaning | None:
    """What a caption says (`Meaning`), or None when the grammar could not have written it; reading back
    through every caption the grammar writes keeps it exact in every language."""
    return _meanings(lang).get(text.strip())


def canonical(meaning: Meaning) -> Meaning:
    """One form for the two ways to say a layout: "a above b" is "b below a", "a right of b" is "b left of a"."""
    if len(meaning) == 3 and meaning[1] in ("below", "right"):
        first, relation, second = meaning
        return (second, "above" if relation == "below" else "left", first)
    return meaning
