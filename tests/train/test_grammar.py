import pytest

from captioner.train.grammar import canonical, caption, named, parse
from captioner.train.scenes import COLOURS, LANGUAGES, Background, Scene, Shape

GREY = Background("plain", ((128, 128, 128), (128, 128, 128)), period=0.1, angle=0.0, seed=0)


def scene(*shapes: tuple[str, str], relation: str | None = None) -> Scene:
    boxes = [(0.3, 0.05, 0.7, 0.45), (0.3, 0.55, 0.7, 0.95)]
    return Scene(tuple(Shape(k, c, COLOURS[c], box) for (c, k), box in zip(shapes, boxes)), relation, GREY)


HAND_CHECKED = [
    (
        scene(("red", "circle"), ("blue", "square"), relation="above"),
        {
            "en": "a red circle above a blue square",
            "fr": "un cercle rouge au-dessus d'un carré bleu",
            "de": "ein roter Kreis über einem blauen Quadrat",
            "es": "un círculo rojo encima de un cuadrado azul",
        },
    ),
    (
        scene(("white", "star"), ("purple", "diamond"), relation="below"),
        {
            "en": "a white star below a purple diamond",
            "fr": "une étoile blanche en dessous d'un losange violet",
            "de": "ein weißer Stern unter einer violetten Raute",
            "es": "una estrella blanca debajo de un rombo morado",
        },
    ),
    (
        scene(("orange", "triangle"), ("green", "star"), relation="left"),
        {
            "en": "an orange triangle to the left of a green star",
            "fr": "un triangle orange à gauche d'une étoile verte",
            "de": "ein orangefarbenes Dreieck links von einem grünen Stern",
            "es": "un triángulo naranja a la izquierda de una estrella verde",
        },
    ),
    (
        scene(("black", "square"), ("yellow", "star"), relation="right"),
        {
            "en": "a black square to the right of a yellow star",
            "fr": "un carré noir à droite d'une étoile jaune",
            "de": "ein schwarzes Quadrat rechts von einem gelben Stern",
            "es": "un cuadrado negro a la derecha de una estrella amarilla",
        },
    ),
    (
        scene(("yellow", "diamond")),
        {"en": "a yellow diamond", "fr": "un losange jaune", "de": "eine gelbe Raute", "es": "un rombo amarillo"},
    ),
    (
        scene(("purple", "star")),
        {"en": "a purple star", "fr": "une étoile violette", "de": "ein violetter Stern", "es": "una estrella morada"},
    ),
]


@pytest.mark.parametrize("example, expected", HAND_CHECKED)
def test_captions_are_grammatical_in_every_language(example, expected):
    assert {lang: caption(example, lang) for lang in LANGUAGES} == expected


def test_unknown_language_is_refused():
    with pytest.raises(ValueError, match="unknown language 'it'"):
        caption(HAND_CHECKED[0][0], "it")


def test_named_reads_colours_and_shapes_back_from_inflected_captions():
    assert named("ein orangefarbenes Quadrat über einer violetten Raute", "de") == (
        {"orange", "purple"}, {"square", "diamond"})
    assert named("une étoile blanche", "fr") == ({"white"}, {"star"})
    assert named("a red", "en") == ({"red"}, set())


@pytest.mark.parametrize("example, _", HAND_CHECKED)
def test_parse_reads_back_what_every_caption_says_and_canonical_joins_the_two_orders(example, _):
    meanings = {lang: parse(caption(example, lang), lang) for lang in LANGUAGES}
    assert len(set(meanings.values())) == 1  # the same meaning in every language
    meaning = meanings["en"]
    assert meaning[0] == (example.shapes[0].colour, example.shapes[0].kind)
    if example.relation:
        assert meaning[1:] == (example.relation, (example.shapes[1].colour, example.shapes[1].kind))


def test_parse_refuses_what_the_grammar_cannot_write_and_canonical_is_order_free():
    assert parse("a red circle next to a blue square", "en") is None and parse("", "fr") is None
    below = parse("a red circle below a blue square", "en")
    above = parse("ein blaues Quadrat über einem roten Kreis", "de")
    assert below != above and canonical(below) == canonical(above) == (("blue", "square"), "above", ("red", "circle"))
    assert canonical(parse("a red circle", "en")) == (("red", "circle"),)
