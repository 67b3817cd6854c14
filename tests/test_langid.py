import pytest

from captioner import langid

# Short captions as captioning models write them, a few per language.
SENTENCES = {
    "en": ["a man walking his dog along the river", "a plate of rice and vegetables on a wooden table",
           "children playing in the snow"],
    "fr": ["une femme assise sur un banc dans le parc", "un vélo rouge appuyé contre un mur",
           "des bateaux amarrés dans le port"],
    "de": ["ein Mann fährt mit dem Fahrrad über die Brücke", "zwei Katzen schlafen auf dem Bett",
           "ein Teller mit Brot und Käse"],
    "es": ["un hombre camina por la playa con su perro", "una mesa con platos y vasos",
           "niños jugando en la calle"],
    "it": ["una ragazza che legge un libro sotto un albero"],
    "pt": ["um homem andando de bicicleta na rua"],
    "nl": ["een hond die in het gras ligt te slapen"],
    "ru": ["кошка сидит на подоконнике и смотрит в окно"],
    "ja": ["公園のベンチに座っている女性"],
    "zh": ["一只狗在草地上奔跑"],
}


@pytest.mark.parametrize("lang", sorted(SENTENCES))
def test_short_captions_are_named_in_their_language_with_confidence(lang):
    found, confidence = langid.identify(SENTENCES[lang])
    assert found == [lang] * len(SENTENCES[lang])
    assert all(langid.MIN_CONFIDENCE <= p <= 1 for p in confidence)


def test_an_english_caption_asked_for_in_french_comes_out_english():
    """A run that asks only for French must not narrow the choices to French: the wrong language would hide."""
    found, _ = langid.identify(["two children playing football in a park"], languages=("fr",))
    assert found == ["en"]


def test_empty_text_has_no_language_and_a_guess_on_two_words_has_none_either():
    found, confidence = langid.identify(["", "  ", "1234 !", None, "un cercle rouge"])
    assert found == [None] * 5
    assert confidence[:4] == [None] * 4 and 0 <= confidence[4] < langid.MIN_CONFIDENCE


def test_a_language_the_run_asks_for_is_a_choice_even_outside_the_default_set():
    swahili = "mtoto anacheza mpira wa miguu uwanjani"
    assert "sw" not in langid.LANGUAGES and langid.identify([swahili])[0] != ["sw"]
    assert langid.identify([swahili], languages=("sw",))[0] == ["sw"]


def test_languages_the_identifier_does_not_know_are_named():
    assert langid.unknown(["en", "sw", "xx", "tlh"]) == ["tlh", "xx"]
