import math
import random

import numpy as np

from captioner.train.scenes import MIN_CONTRAST, random_scene, render, scenes


def test_scenes_are_deterministic_by_seed():
    first, again, other = (list(scenes(20, seed=s)) for s in (7, 7, 8))
    assert first == again
    assert first != other
    assert np.array_equal(np.asarray(render(first[3], 64)), np.asarray(render(again[3], 64)))


def test_shapes_stand_out_from_the_background_and_relations_hold():
    rng = random.Random(0)
    for _ in range(300):
        example = random_scene(rng, rng.choice((1, 2)))
        for shape in example.shapes:
            assert all(math.dist(shape.rgb, tone) >= MIN_CONTRAST for tone in example.background.tones)
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
        example = random_scene(rng, 2)
        pixels = np.asarray(render(example, 128)).astype(int)
        for shape in example.shapes:
            left, top, right, bottom = shape.box
            centre = pixels[int((top + bottom) / 2 * 128), int((left + right) / 2 * 128)]
            assert np.abs(centre - shape.rgb).max() <= 3
