"""Is translation the bottleneck? Translation throughput per language over captioning throughput.

    python benchmarks/translation.py [--model captioner/demo_model] [--translate fr=FOLDER ...] [--images 256]

Both run in this one process, on the same machine, with the same batch size, threads and generation
settings, through the code the caption actor runs (generate.caption, translation.translate). Captions come
from synthetic scenes decoded like job inputs; each language then translates those captions. Without
--translate, each language gets a Marian model with the architecture of Helsinki-NLP/opus-mt-en-fr
(6+6 layers, d_model 512, 59,514-token vocabulary) and random weights: real compute per token, but a
random model rarely stops early, so it writes --max-new-tokens tokens every time (a worst case).
Figures are medians over --repeats; a JSON line follows the table.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import MarianConfig, MarianMTModel, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from captioner.media import image as images
from captioner.models import generate, translation
from captioner.models import loading as model
from captioner.train import scenes as synth
from captioner.config import DEMO_MODEL, DecodeConfig, GenerationConfig, ModelConfig


def opus_mt_like(folder: Path, words: list[str]) -> Path:
    """Random weights in the opus-mt-en-fr architecture, with a word-level tokenizer over ``words``."""
    vocab = {tok: i for i, tok in enumerate(["</s>", "<unk>", "<pad>", *sorted(set(words))])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=core, eos_token="</s>", unk_token="<unk>", pad_token="<pad>").save_pretrained(folder)
    config = MarianConfig(vocab_size=59514, d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
                          decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048,
                          max_position_embeddings=512, pad_token_id=2, eos_token_id=0, decoder_start_token_id=2)
    torch.manual_seed(0)
    MarianMTModel(config).save_pretrained(folder)
    return folder


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEMO_MODEL, help="captioner (default: the bundled demo model)")
    parser.add_argument("--translate", action="append", default=[], metavar="LANG=MODEL",
                        help="translation model per language (default: opus-mt-en-fr-like random models for fr, de, es)")
    parser.add_argument("--images", type=int, default=256, help="images captioned per timing")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)

    captioner = model.load(ModelConfig(name=args.model))
    settings = GenerationConfig(max_new_tokens=args.max_new_tokens)
    resize = captioner.info.image.resize
    limits = DecodeConfig()
    scenes = list(synth.scenes(args.images, seed=4242))
    pixels = np.stack([images.decode(synth.encode(synth.render(s, 160), "jpeg"), [resize], formats=limits.formats,
                                      max_pixels=limits.max_pixels).pixels[0] for s in scenes])
    source = next(iter(captioner.info.languages))

    def caption_all() -> list[str]:
        out = []
        for start in range(0, len(pixels), args.batch_size):
            chunk = pixels[start:start + args.batch_size]
            out += [r[source].text for r in generate.caption(captioner, chunk, [[source]] * len(chunk), settings)]
        return out

    texts = caption_all()
    caption_s = timed(caption_all, args.repeats)
    caption_rate = len(pixels) / caption_s

    with tempfile.TemporaryDirectory() as tmp:
        targets = dict(pair.split("=", 1) for pair in args.translate)
        if not targets:
            shared = str(opus_mt_like(Path(tmp) / "opus-mt-like", [w for t in texts for w in t.split()]))
            targets = {lang: shared for lang in ("fr", "de", "es")}
        rows = []
        for lang, name in targets.items():
            translator = model.load_translator(ModelConfig(name=name))

            def translate_all() -> None:
                for start in range(0, len(texts), args.batch_size):
                    translation.translate(translator, texts[start:start + args.batch_size], source, lang, settings)

            rate = len(texts) / timed(translate_all, args.repeats)
            rows.append({"lang": lang, "translator": name, "captions_per_s": rate, "ratio": rate / caption_rate})

    print(f"captioning ({args.model}): {caption_rate:.1f} images/s  "
          f"[{len(pixels)} images, batch {args.batch_size}, {args.threads} threads, median of {args.repeats}]")
    print(f"{'lang':<6}{'translations/s':>16}{'÷ captioning':>14}")
    for row in rows:
        print(f"{row['lang']:<6}{row['captions_per_s']:>16.1f}{row['ratio']:>14.2f}")
    print(json.dumps({"captioning_images_per_s": caption_rate, "languages": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
