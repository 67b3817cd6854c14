import io
import math
import random

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from captioner import synth
from captioner.synth import COLOURS, Background, Scene, Shape

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
    assert {lang: synth.caption(example, lang) for lang in synth.LANGUAGES} == expected


def test_unknown_language_is_refused():
    with pytest.raises(ValueError, match="unknown language 'it'"):
        synth.caption(HAND_CHECKED[0][0], "it")


def test_named_reads_colours_and_shapes_back_from_inflected_captions():
    assert synth.named("ein orangefarbenes Quadrat über einer violetten Raute", "de") == (
        {"orange", "purple"}, {"square", "diamond"})
    assert synth.named("une étoile blanche", "fr") == ({"white"}, {"star"})
    assert synth.named("a red", "en") == ({"red"}, set())


def test_scenes_are_deterministic_by_seed():
    first, again, other = (list(synth.scenes(20, seed=s)) for s in (7, 7, 8))
    assert first == again
    assert first != other
    assert np.array_equal(np.asarray(synth.render(first[3], 64)), np.asarray(synth.render(again[3], 64)))


def test_shapes_stand_out_from_the_background_and_relations_hold():
    rng = random.Random(0)
    for _ in range(300):
        example = synth.random_scene(rng, rng.choice((1, 2)))
        for shape in example.shapes:
            assert all(math.dist(shape.rgb, tone) >= synth.MIN_CONTRAST for tone in example.background.tones)
            assert all(0 <= v <= 1 for v in shape.box)
        if example.relation:
            first, second = (s.box for s in example.shapes)
            left, top, right, bottom = 0, 1, 2, 3
            holds = {
                "above": first[bottom] < second[top],
                "below": first[top] > second[bottom],
                "left": first[right] < second[left],
                "right": first[left] > second[right],
            }
            assert holds[example.relation]


def test_render_paints_each_shape_in_its_colour():
    rng = random.Random(1)
    for _ in range(40):
        example = synth.random_scene(rng, 2)
        pixels = np.asarray(synth.render(example, 128)).astype(int)
        for shape in example.shapes:
            left, top, right, bottom = shape.box
            centre = pixels[int((top + bottom) / 2 * 128), int((left + right) / 2 * 128)]
            assert np.abs(centre - shape.rgb).max() <= 3


def test_write_parquet_rows_cycle_through_languages(tmp_path):
    path = tmp_path / "nested" / "train.parquet"
    assert synth.write_parquet(str(path), 6, seed=3, size=48, image_format="png", row_group_size=4) == 6
    table = pq.read_table(path)
    assert table.column_names == ["image", "caption", "lang"]
    assert table.column("lang").to_pylist() == ["en", "fr", "de", "es", "en", "fr"]
    expected = [synth.caption(s, lang) for s, lang in zip(synth.scenes(6, seed=3), table.column("lang").to_pylist())]
    assert table.column("caption").to_pylist() == expected
    image = Image.open(io.BytesIO(table.column("image")[0].as_py()))
    assert (image.format, image.size) == ("PNG", (48, 48))
