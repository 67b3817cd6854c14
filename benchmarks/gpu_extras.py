"""What a GPU run also depends on, beside captions per second: how often half precision writes fp32's captions, and
how fast a decoded batch reaches the device.

    python benchmarks/gpu_extras.py                                         # CUDA: the full-size ViT-GPT2
    python benchmarks/gpu_extras.py --device cpu --model demo --images 8    # a check on a CPU, seconds

agreement  the share of captions identical to fp32's, per half-precision dtype (fp16, bf16), greedy on the plain
           path and on the fast one, over --images textured random images in batches of --batch-size: a random
           model rarely ends a caption, so this is the worst case of --max-new-tokens tokens each;
transfer   host-to-device GB/s of one uint8 caption batch (B, H, W, 3, the model's size) from pageable and from
           pinned host memory, and the milliseconds of the whole step the caption actor runs
           (``preprocess.pixel_values``: copy, then normalise on the device); CUDA only.

Needs torch, transformers, numpy and Pillow, not Ray. A JSON line with every figure ends the output.
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

from captioner.config import DEMO_MODEL, GenerationConfig, ModelConfig
from captioner.models import generate, loading
from captioner.models.preprocess import pixel_values
from vit_gpt2 import vit_gpt2


def images(n: int, height: int, width: int) -> np.ndarray:
    """(n, H, W, 3) uint8 with texture: smooth blobs plus noise, as photographs are neither flat nor white noise."""
    rng = np.random.default_rng(7)
    coarse = rng.integers(0, 256, (n, height // 16 + 1, width // 16 + 1, 3)).repeat(16, 1).repeat(16, 2)
    return np.clip(coarse[:, :height, :width] + rng.normal(0, 24, (n, height, width, 3)), 0, 255).astype(np.uint8)


def captions(captioner: loading.Captioner, pixels: np.ndarray, fast: str, args: argparse.Namespace) -> list[str]:
    settings = GenerationConfig(max_new_tokens=args.max_new_tokens, fast=fast)
    out = []
    for start in range(0, len(pixels), args.batch_size):
        batch = pixels[start:start + args.batch_size]
        out += [r["en"].text for r in generate.caption(captioner, batch, [["en"]] * len(batch), settings)]
    return out


def agreement(folder: str, device: torch.device, args: argparse.Namespace) -> dict:
    """Per dtype and path: the share of captions equal to fp32's plain ones."""
    reference = loading.load(ModelConfig(name=folder, dtype="fp32"), device=device)
    size = reference.info.image.resize
    pixels = images(args.images, size.height, size.width)
    truth = captions(reference, pixels, "off", args)
    del reference
    shares = {}
    for dtype in args.dtypes:
        captioner = loading.load(ModelConfig(name=folder, dtype=dtype), device=device)
        for fast, path in (("off", "plain"), ("on", "fast")):
            same = sum(a == b for a, b in zip(captions(captioner, pixels, fast, args), truth))
            shares[f"{dtype} {path}"] = same / len(truth)
            print(f"{dtype:<6}{path:<7}{same:>6} of {len(truth)} captions as fp32 writes them "
                  f"({same / len(truth):.1%})", flush=True)
        del captioner
        torch._dynamo.reset()
    return shares


def transfer(folder: str, device: torch.device, args: argparse.Namespace) -> dict:
    """GB/s of one batch from pageable and pinned memory, and the caption actor's whole preprocessing step."""
    info = loading.describe(ModelConfig(name=folder))
    size = info.image.resize
    batch = images(args.batch_size, size.height, size.width)
    pageable, pinned = torch.from_numpy(batch), torch.from_numpy(batch).pin_memory()
    result = {"batch": args.batch_size, "mb": batch.nbytes / 1e6}
    for name, host in (("pageable", pageable), ("pinned", pinned)):
        result[f"{name}_gb_per_s"] = batch.nbytes / 1e9 / timed(lambda: host.to(device, non_blocking=True), device)
    result["pixel_values_ms"] = 1e3 * timed(lambda: pixel_values(batch, info.image, device, torch.float16), device)
    print(f"batch of {args.batch_size} at {size.width}x{size.height}: {result['mb']:.1f} MB, pageable "
          f"{result['pageable_gb_per_s']:.1f} GB/s, pinned {result['pinned_gb_per_s']:.1f} GB/s, copy and normalise "
          f"{result['pixel_values_ms']:.2f} ms", flush=True)
    return result


def timed(step, device: torch.device, repeats: int = 20) -> float:
    """Median seconds of ``step`` to the end of its device work, after a warm-up."""
    step()
    seconds = []
    for _ in range(repeats):
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="full", help="full (ViT-GPT2 architecture, random weights), demo, or a "
                        "captioner folder (default: %(default)s)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=512, help="images compared with fp32 (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=128, help="(default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="(default: %(default)s)")
    parser.add_argument("--dtypes", nargs="+", default=None, choices=("fp16", "bf16"),
                        help="default: fp16 bf16 on CUDA, bf16 on a CPU (a check of the script)")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "captioner-bench"),
                        help="where the full-size model is built once (default: %(default)s)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    args.dtypes = args.dtypes or (["fp16", "bf16"] if device.type == "cuda" else ["bf16"])
    folder = str(vit_gpt2(Path(args.cache) / "vit-gpt2")) if args.model == "full" else (
        DEMO_MODEL if args.model == "demo" else args.model)
    print(f"model {args.model} on {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}", flush=True)
    report = {"model": args.model, "device": str(device), "agreement": agreement(folder, device, args)}
    if device.type == "cuda":
        report["transfer"] = transfer(folder, device, args)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
