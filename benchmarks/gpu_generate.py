"""Model-only captions per second, with fast generation on and off: how near one GPU comes to its FLOP ceiling.

    python benchmarks/gpu_generate.py                        # CUDA: batches 64 to 1024, fp16 and bf16
    python benchmarks/gpu_generate.py --device cpu --batch-sizes 2 4 --model demo    # a check on a CPU, < 1 min
    python benchmarks/gpu_generate.py --device cpu --model demo --languages en,fr,de,es   # four languages a call
    python benchmarks/gpu_generate.py --model paligemma2 --batch-sizes 16 64 256     # PaliGemma 2 3B at 224 px
    python benchmarks/gpu_generate.py --model florence2-base --caption-style detailed    # Florence-2-base on CUDA

Measures what one caption actor does with a batch already decoded (``generate.caption``: uint8 pixels to the device
and normalised there, the encoder once per image, greedy generation, the text decoded, the scores), without Ray or
image decoding, for the full-size ViT-GPT2 architecture (vit_gpt2.py: ViT-B/16 and GPT-2 small with random weights,
which rarely end a caption, so every caption runs all --max-new-tokens: the worst case), at each batch size and
dtype, with ``--fast-generation`` off (plain ``generate``) and on (a static KV cache, the decoder step replayed as
CUDA graphs, batches padded to powers of two; on a CPU the static cache and padding alone). Other architectures,
full-size with random weights: ``--model florence2-base`` (florence2.py: DaViT and BART-base, 768 x 768 images,
577 image tokens; ``--caption-style`` picks its task) and ``--model paligemma2`` (paligemma2.py: SigLIP So400m/14
and Gemma 2 2B at 224 px, 256 image tokens before the prompt; it has no static cache, so both columns are its plain
path). ``--small`` keeps either's kinds of layers at a few small ones, a check on a CPU.

Each cell: one warm-up call (on the fast path it compiles and captures the graphs, and checks itself against plain
generate: its seconds and the check's verdict are shown), then the median of --repeats timed calls; on CUDA, the
peak GPU memory of the cell (GiB, the larger of both paths). FLOPs per caption are counted once per batch size by torch's FlopCounterMode on a
plain call, the useful work; the share of the ceiling is the FLOP/s reached over --peak-tflops (989: dense bf16 and
fp16 on an H100 or H200 SXM). Rows print as they are measured, so a run cut short still shows what it measured;
--budget-s skips the cells left once that many seconds have passed. Needs torch, transformers and Pillow (for the
image processor), not Ray. A JSON line with every figure ends the output.
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
import transformers
from torch.utils.flop_counter import FlopCounterMode

from captioner.config import DEMO_MODEL, GenerationConfig, ModelConfig
from captioner.models import fast as fast_path
from captioner.models import generate, loading
from florence2 import florence2_base  # benchmarks/: the full-size architectures, built once under --cache
from paligemma2 import paligemma2
from vit_gpt2 import vit_gpt2  # shared with bench.py

PATHS = {"off": "plain", "on": "fast"}  # --fast-generation value -> column name


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def caption(captioner: loading.Captioner, pixels: np.ndarray, fast: str, tokens: int, langs: list[str]) -> float:
    """Seconds for one model-only call on a batch, every image in every language, to the end of its device work."""
    sync(captioner.device)
    start = time.perf_counter()
    generate.caption(captioner, pixels, [langs] * len(pixels), GenerationConfig(max_new_tokens=tokens, fast=fast))
    sync(captioner.device)
    return time.perf_counter() - start


def flops_per_caption(captioner: loading.Captioner, pixels: np.ndarray, args: argparse.Namespace) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        caption(captioner, pixels, "off", args.max_new_tokens, args.languages)
    return counter.get_total_flops() / (len(pixels) * len(args.languages))


def measure(captioner: loading.Captioner, pixels: np.ndarray, fast: str, args: argparse.Namespace) -> dict:
    """One cell: a warm-up, then the median of the timed calls; an out-of-memory batch is reported as such."""
    if captioner.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(captioner.device)
    try:
        warmup = caption(captioner, pixels, fast, args.max_new_tokens, args.languages)
        median = statistics.median(caption(captioner, pixels, fast, args.max_new_tokens, args.languages)
                                   for _ in range(args.repeats))
    except torch.cuda.OutOfMemoryError:
        captioner.caches.clear()
        torch.cuda.empty_cache()
        return {"error": "out of memory"}
    cell = {"warmup_s": warmup, "median_s": median, "captions_per_s": len(pixels) * len(args.languages) / median}
    if captioner.device.type == "cuda":
        cell["peak_gib"] = torch.cuda.max_memory_allocated(captioner.device) / 2**30
    checks = [c["verdict"] for c in captioner.checks if c["batch"] == fast_path.bucket(len(pixels))]
    if fast == "on" and checks:
        cell["self_check"] = checks[-1]  # the fast path's own check of this shape against plain generate
    return cell


def row_for(captioner: loading.Captioner, dtype: str, batch: int, flops: dict[int, float],
            args: argparse.Namespace, started: float) -> dict:
    """Both paths at one batch size and dtype, with the ratio and the shares of the ceiling."""
    size = captioner.info.image.resize
    pixels = np.random.default_rng(batch).integers(0, 256, (batch, size.height, size.width, 3), dtype=np.uint8)
    if batch not in flops:
        flops[batch] = flops_per_caption(captioner, pixels, args)
    row = {"dtype": dtype, "batch": batch, "gflop_per_caption": flops[batch] / 1e9}
    for fast, name in PATHS.items():
        over = args.budget_s is not None and time.perf_counter() - started > args.budget_s
        row[name] = {"error": "skipped: over --budget-s"} if over else measure(captioner, pixels, fast, args)
        if "captions_per_s" in row[name]:
            row[name]["share_of_peak"] = row[name]["captions_per_s"] * flops[batch] / (args.peak_tflops * 1e12)
    if "captions_per_s" in row["plain"] and "captions_per_s" in row["fast"]:
        row["fast_over_plain"] = row["fast"]["captions_per_s"] / row["plain"]["captions_per_s"]
    return row


def print_row(row: dict) -> None:
    cells = []
    for name in PATHS.values():
        cell = row[name]
        cells.append(f"{cell['captions_per_s']:>12.1f}{cell['share_of_peak']:>8.1%}" if "captions_per_s" in cell
                     else f"{cell['error'][:20]:>20}")
    ratio = f"{row['fast_over_plain']:>7.2f}x" if "fast_over_plain" in row else f"{'-':>8}"
    warmup = f"{row['fast']['warmup_s']:>9.1f}" if "warmup_s" in row["fast"] else f"{'-':>9}"
    memory = max((row[name].get("peak_gib", 0.0) for name in PATHS.values()), default=0.0)
    check = row["fast"].get("self_check", "-")
    print(f"{row['dtype']:<6}{row['batch']:>6}{row['gflop_per_caption']:>8.1f}" + "".join(cells) + ratio + warmup
          + f"{memory:>8.1f}  {check}", flush=True)


def model_folder(args: argparse.Namespace) -> str:
    """The checkpoint to measure: a full-size architecture built once under --cache, the demo model, or a folder."""
    cache = Path(args.cache)
    if args.model == "full":
        return str(vit_gpt2(cache / "vit-gpt2"))
    if args.model == "florence2-base":
        return str(florence2_base(cache / ("florence2-base-small" if args.small else "florence2-base"), args.small))
    if args.model == "paligemma2":
        return str(paligemma2(cache / ("paligemma2-small" if args.small else "paligemma2-3b-224"), small=args.small))
    return DEMO_MODEL if args.model == "demo" else args.model


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="full", help="full (ViT-GPT2 architecture, random weights), florence2-base "
                        "(Florence-2-base architecture), paligemma2 (PaliGemma 2 3B at 224 px), demo, or a captioner "
                        "folder (default: %(default)s)")
    parser.add_argument("--small", action="store_true", help="florence2-base or paligemma2 with a few small layers: "
                        "a check on a CPU")
    parser.add_argument("--caption-style", default=ModelConfig.caption_style,
                        help="the task of a model that has several (Florence-2) (default: %(default)s)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cuda or cpu (default: %(default)s)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", help="default: 64 128 256 512 1024 on CUDA, 2 4 on CPU")
    parser.add_argument("--dtypes", nargs="+", choices=("fp16", "bf16", "fp32"),
                        help="default: fp16 bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--languages", type=lambda v: v.split(","), default=["en"],
                        help="comma-separated languages each image is captioned in, all native to the model, e.g. "
                        "en,fr,de,es with --model demo; captions/s counts every language's (default: en)")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="tokens per caption (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per cell (default: %(default)s)")
    parser.add_argument("--peak-tflops", type=float, default=989.0,
                        help="the device's dense FLOP ceiling at the dtype, in TFLOP/s (default: %(default)s, "
                        "H100/H200 SXM bf16 and fp16)")
    parser.add_argument("--budget-s", type=float, help="skip the cells left after this many seconds")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "captioner-bench"),
                        help="where the full-size model is built once (default: %(default)s)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.small and args.model not in ("paligemma2", "florence2-base"):
        parser.error("--small shrinks --model florence2-base or paligemma2 only")
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    args.batch_sizes = args.batch_sizes or ([64, 128, 256, 512, 1024] if cuda else [2, 4])
    folder = model_folder(args)
    started = time.perf_counter()
    report = {"model": args.model + (" (small)" if args.small else ""), "caption_style": args.caption_style,
              "languages": args.languages,
              "device": torch.cuda.get_device_name(device) if cuda else "cpu",
              "torch": torch.__version__, "transformers": transformers.__version__,
              "max_new_tokens": args.max_new_tokens, "repeats": args.repeats, "peak_tflops": args.peak_tflops,
              "rows": []}
    print(f"model {report['model']} ({args.caption_style}, {','.join(args.languages)}) on {report['device']}, "
          f"greedy, {args.max_new_tokens} new tokens, median of {args.repeats}, torch {torch.__version__}, transformers {transformers.__version__}; "
          f"share of {args.peak_tflops:g} TFLOP/s", flush=True)
    print(f"{'dtype':<6}{'batch':>6}{'GFLOP':>8}{'plain cap/s':>12}{'peak':>8}{'fast cap/s':>12}{'peak':>8}"
          f"{'ratio':>8}{'warm-up':>9}{'GiB':>8}  self-check", flush=True)
    flops: dict[int, float] = {}  # per caption, by batch size: the same work in every dtype
    for dtype in args.dtypes or (["fp16", "bf16"] if cuda else ["fp32"]):
        model = ModelConfig(name=folder, dtype=dtype, caption_style=args.caption_style)
        captioner = loading.load(model, device=device)
        for batch in args.batch_sizes:
            report["rows"].append(row_for(captioner, dtype, batch, flops, args, started))
            print_row(report["rows"][-1])
        del captioner
        torch._dynamo.reset()  # the next dtype compiles afresh, under dynamo's recompile limit
        if cuda:
            torch.cuda.empty_cache()
    report["seconds"] = time.perf_counter() - started
    print(json.dumps(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
