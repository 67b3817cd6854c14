"""Accuracy of the demo captioner on freshly generated scenes, per language.

    python benchmarks/eval_demo.py [--model captioner/demo_model] [--n 500] [--seed 12345] [--shapes 1]

Scenes come from a seed the training set did not use, are rendered at --size pixels and saved as
JPEG, as real inputs would be, then captioned with plain transformers (image processor, greedy
generate with the [bos, <|lang|>] prompt). A caption gets the colour right when the colours it
names are exactly those in the scene, likewise the shape; "scene" when it says everything the scene
holds, in either order for two shapes ("a above b" or "b below a"); "exact" compares the whole caption
with the training caption. With two shapes, the last line counts the images whose four captions all
say the same layout.
"""

import argparse
import io
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel
from transformers.utils import logging as hf_logging

from captioner.train.grammar import canonical, caption, named, parse
from captioner.train.scenes import LANGUAGES, encode, render, scenes

DEMO_MODEL = Path(__file__).resolve().parents[1] / "captioner" / "demo_model"


def caption_all(model_dir: Path, images: list[Image.Image], batch_size: int) -> dict[str, list[str]]:
    """Greedy captions of every image in every language, batched; the encoder runs once per batch."""
    model = VisionEncoderDecoderModel.from_pretrained(model_dir, use_safetensors=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    processor = AutoImageProcessor.from_pretrained(model_dir)
    captions: dict[str, list[str]] = {lang: [] for lang in LANGUAGES}
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        with torch.inference_mode():
            encoded = model.encoder(pixel_values=processor(batch, return_tensors="pt").pixel_values)
            for lang, texts in captions.items():
                prompt = torch.tensor([[tokenizer.bos_token_id, tokenizer.convert_tokens_to_ids(f"<|{lang}|>")]])
                prompts = prompt.repeat(len(batch), 1)  # (B, 2), unpadded
                generated = model.generate(encoder_outputs=encoded, decoder_input_ids=prompts, num_beams=1,
                                           decoder_attention_mask=torch.ones_like(prompts), do_sample=False)
                texts += [text.strip() for text in tokenizer.batch_decode(generated, skip_special_tokens=True)]
    return captions


def jpeg_round_trip(image: Image.Image) -> Image.Image:
    return Image.open(io.BytesIO(encode(image, "jpeg"))).convert("RGB")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEMO_MODEL)
    parser.add_argument("--n", type=int, default=500, help="scenes per language")
    parser.add_argument("--seed", type=int, default=12345, help="scene seed; the demo model trained on seed 0")
    parser.add_argument("--shapes", type=int, choices=(1, 2), default=1, help="shapes per scene")
    parser.add_argument("--size", type=int, default=160, help="rendered image side in pixels")
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args(argv)
    hf_logging.disable_progress_bar()

    examples = list(scenes(args.n, args.seed, one_shape_fraction=1.0 if args.shapes == 1 else 0.0))
    images = [jpeg_round_trip(render(scene, args.size)) for scene in examples]
    started = time.time()
    captions = caption_all(args.model, images, args.batch_size)
    print(f"{args.model.name}: {args.n} scenes with {args.shapes} shape(s) per language, seed {args.seed}, "
          f"{args.size} px JPEG\n")
    print("| lang | colour | shape | both | scene | exact caption | n |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    n = len(examples)
    truths = [canonical(parse(caption(scene, "en"), "en")) for scene in examples]
    for lang, texts in captions.items():
        colour = shape = both = right = exact = 0
        for scene, text, truth in zip(examples, texts, truths):
            colours, shapes = named(text, lang)
            colour_ok = colours == {s.colour for s in scene.shapes}
            shape_ok = shapes == {s.kind for s in scene.shapes}
            colour, shape, both = colour + colour_ok, shape + shape_ok, both + (colour_ok and shape_ok)
            meaning = parse(text, lang)
            right += meaning is not None and canonical(meaning) == truth
            exact += text == caption(scene, lang)
        print(f"| {lang} | {colour / n:.1%} | {shape / n:.1%} | {both / n:.1%} | {right / n:.1%} | {exact / n:.1%} "
              f"| {n} |")
    if args.shapes == 2:
        said = [{canonical(parse(t, lang) or ()) for lang, t in zip(captions, texts)} for texts in zip(*captions.values())]
        agree = sum(len(layouts) == 1 and () not in layouts for layouts in said)
        print(f"\nthe same layout in all {len(captions)} languages: {agree / n:.1%} of {n} images")
    print(f"\n{4 * len(examples)} captions in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
