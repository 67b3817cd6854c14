"""Does the job keep the model busy, and does it beat a hand-written loop? One run, same images, same model.

    python benchmarks/bench.py [--model full|demo|FOLDER] [--images 256] [--inputs camera-jpeg] [--repeats 3]
    python benchmarks/bench.py --memory-run 20000          # RSS of the driver and an actor over a long run

Measures, on the same images and the same model, with the same generation settings:
  model-only  the caption actor's own work (``stages.CaptionActor`` called in this process, no Ray, with a
              torch thread per CPU) on batches decoded beforehand into memory (uint8 at the model's size):
              the pipeline's ceiling on this machine;
  pipeline    ``captioner run`` in a child process, from the image files to committed Parquet, one shard per
              caption batch; the rate is the images of the shards after the k-th over the time between the
              k-th shard's commit marker and the last's (k caption actors finish their first batches
              together); the time to the first marker (Ray, the model load, the first batch) is reported
              apart as startup;
  baseline    what a model card shows: PIL opens each file, the image processor, ``model.generate`` in
              batches of 8, ``batch_decode``; one process, default torch threads;
  decode      ``images.decode`` per image in one process (so per CPU core), with libjpeg's draft (reduced-size
              DCT) decoding and with Pillow's draft turned off, per input kind; and with draft through the
              bounded decode child (``sandbox``) the pipeline uses, which adds the copies to and from it;
and the ratios pipeline ÷ model-only and pipeline ÷ baseline (median of the per-round ratios: the three run
back to back in each round, so a busy neighbour slows all three) with the peak RSS of the pipeline's driver
and of its caption actor.

``--model full`` (default) is the architecture of nlpconnect/vit-gpt2-image-captioning (ViT-B/16 at 224,
GPT-2 small with cross-attention, 50,257-token vocabulary, 239 M parameters) with random weights, built from
configs, no download; its tokenizer is word-level with one entry per id, GPT-2's <|endoftext|> at 50256. A
random model rarely ends a caption, so every caption runs to --max-new-tokens: the compute of long
captions, a worst case. ``--model demo`` is the bundled demo model. Images are generated with texture
(so JPEGs have camera-like sizes: 12 MP ~3 MB, 1024x768 ~0.2 MB) and cached with the model under --cache.

On a CUDA machine the model runs in fp16, ``--batch-size 0`` (the default there) picks the batch size by
measuring model-only throughput, and the table adds the share of the GPU's peak fp16 FLOP/s reached
(FLOPs counted by torch's FlopCounterMode on one batch). That path has not been run on hardware yet.
Figures are medians over --repeats; the table is followed by a JSON line, also written to --json.
"""

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from PIL import Image, JpegImagePlugin
from torch.utils.flop_counter import FlopCounterMode

from captioner import schema
from captioner.fingerprint import fingerprints
from captioner.media import image as images
from captioner.media import sandbox
from captioner.models import loading as model
from captioner.run import reading, stages
from captioner.run.resources import resolve
from captioner.config import (DEMO_MODEL, DecodeConfig, GenerationConfig, InputConfig, ModelConfig, ResourceConfig,
                              RunConfig)
from vit_gpt2 import vit_gpt2  # benchmarks/: the full-size architecture, shared with gpu_generate.py

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"camera": (4032, 3024), "web": (1024, 768)}  # 12.2 MP phone camera; a typical web image
FORMATS = {"jpeg": ("JPEG", ".jpg", {"quality": 90}), "png": ("PNG", ".png", {})}
KINDS = [f"{size}-{fmt}" for size in SIZES for fmt in FORMATS]
BASELINE_BATCH = 8
# Dense fp16 tensor-core peaks in TFLOP/s, by a word of the CUDA device name (SXM parts where there are two).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "L4": 121.0, "T4": 65.0}


def textured(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Smooth colour fields with grain: compresses like a photo, not like noise or a flat fill."""
    coarse = rng.integers(0, 256, (height // 48 + 2, width // 48 + 2, 3), dtype=np.uint8)
    pixels = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
    grain = rng.integers(-10, 11, (256, 256, 3), dtype=np.int16)
    pixels += np.tile(grain, (height // 256 + 1, width // 256 + 1, 1))[:height, :width]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def image_files(cache: Path, kind: str, n: int) -> list[Path]:
    """The first ``n`` images of a kind, generated once (seeded per index) and kept under ``cache``."""
    size, fmt = kind.split("-")
    pil_format, suffix, options = FORMATS[fmt]
    folder = cache / "images" / kind
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:06d}{suffix}" for i in range(n)]
    for i, path in enumerate(paths):
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            textured(np.random.default_rng(i), *SIZES[size]).save(tmp, format=pil_format, **options)
            tmp.rename(path)
    return paths


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ---------------------------------------------------------------- model-only: the caption actor, no Ray


def decoded_batches(paths: list[Path], config: RunConfig, batch_size: int) -> list[dict[str, np.ndarray]]:
    """Batches as the caption actor receives them: read + decode done beforehand, uint8 at the model's size."""
    spec = model.describe(config.model)
    rows = {schema.URI: np.array([str(p) for p in paths], dtype=object),
            schema.SIZE: np.array([p.stat().st_size for p in paths], dtype=object),
            schema.ETAG: np.array(["bench"] * len(paths), dtype=object),
            schema.LANGS: np.array([",".join(config.languages)] * len(paths), dtype=object),
            schema.ATTEMPT: np.zeros(len(paths), dtype=np.int32)}
    decoded = reading.read_and_decode(rows, {schema.PIXELS: spec.image}, config.storage, config.decode, config.video,
                                      config.source_language)
    return [{k: v[i:i + batch_size] for k, v in decoded.items()} for i in range(0, len(paths), batch_size)]


def run_actor(actor: stages.CaptionActor, batches: list[dict[str, np.ndarray]]) -> float:
    """Seconds for the actor to caption every batch."""
    start = time.perf_counter()
    for batch in batches:
        actor(batch)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def flops_per_image(actor: stages.CaptionActor, batch: dict[str, np.ndarray]) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        actor(batch)
    return counter.get_total_flops() / len(batch[schema.URI])


def pick_batch_size(actor: stages.CaptionActor, paths: list[Path], config: RunConfig) -> tuple[int, dict[int, float]]:
    """On a GPU: double the batch while images/s grows by more than 5%.

    A batch that runs out of memory is captioned image by image by the actor, which shows as a drop in rate.
    """
    rates: dict[int, float] = {}
    size = 16
    while size <= min(1024, len(paths)):
        batches = decoded_batches(paths[:size], config, size)
        run_actor(actor, batches)  # warm-up at this size
        rates[size] = size / run_actor(actor, batches)
        if len(rates) > 1 and rates[size] < 1.05 * rates[size // 2]:
            break
        size *= 2
    return max(rates, key=rates.get), rates


# ---------------------------------------------------------------- baseline: a model card's loop


def baseline(model_dir: str, paths: list[Path], generation: GenerationConfig, device: torch.device) -> float:
    """Seconds for the plain loop a model card shows, after one warm-up batch."""
    from transformers import AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel

    net = VisionEncoderDecoderModel.from_pretrained(model_dir).to(device)
    processor = AutoImageProcessor.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    gen_kwargs = {"max_new_tokens": generation.max_new_tokens, "num_beams": generation.num_beams}

    def caption(batch: list[Path]) -> list[str]:
        pictures = []
        for path in batch:
            picture = Image.open(path)
            if picture.mode != "RGB":
                picture = picture.convert("RGB")
            pictures.append(picture)
        pixel_values = processor(images=pictures, return_tensors="pt").pixel_values.to(device)
        output_ids = net.generate(pixel_values, **gen_kwargs)
        return [text.strip() for text in tokenizer.batch_decode(output_ids, skip_special_tokens=True)]

    caption(paths[:BASELINE_BATCH])
    start = time.perf_counter()
    for i in range(0, len(paths), BASELINE_BATCH):
        caption(paths[i:i + BASELINE_BATCH])
    return time.perf_counter() - start


# ---------------------------------------------------------------- pipeline: captioner run, with RSS sampled


@dataclass
class Sampler:
    """Samples the RSS of a process and of the caption actor Ray starts for it, from /proc (Linux).

    Each sample has the resident MiB and the private (anonymous) part of it: an actor's RSS also counts the
    pages of Ray's shared object store it has read, which grow towards the store's size as blocks stream by.
    """

    pid: int
    every_s: float = 0.25
    samples: list[dict] = field(default_factory=list)
    peak_driver: int = 0
    peak_actor: int = 0
    actors: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._start = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            driver = _memory(self.pid)
            pids = _caption_actors()
            self.actors.update(pids)
            actor = max((_memory(pid) for pid in pids), key=lambda m: m["rss"], default=None)
            self.peak_driver = max(self.peak_driver, driver["peak"])
            self.peak_actor = max(self.peak_actor, actor["peak"] if actor else 0)
            if driver["rss"]:
                self.samples.append({"at_s": time.monotonic() - self._start, "driver_mib": driver["rss"],
                                     "driver_private_mib": driver["private"],
                                     "actor_mib": actor["rss"] if actor else 0,
                                     "actor_private_mib": actor["private"] if actor else 0})


def _memory(pid: int) -> dict[str, int]:
    """Resident, peak resident and private resident MiB of a process; zeros once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        status = ""
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {name: int(fields.get(key, "0 kB").split()[0]) // 1024
            for name, key in (("rss", "VmRSS"), ("peak", "VmHWM"), ("private", "RssAnon"))}


def _caption_actors() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            title = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::") and "CaptionActor" in title:
            pids.append(int(proc.name))
    return pids


def pipeline(paths: list[Path], model_dir: str, out: Path, args: argparse.Namespace, batch_size: int | None,
             rows_per_file: int) -> dict:
    """``captioner run`` over a manifest of ``paths`` in a child process; its run record and RSS peaks."""
    manifest = out.with_suffix(".txt")
    manifest.write_text("".join(f"{p}\n" for p in paths))
    command = [sys.executable, "-m", "captioner.cli", "run", str(manifest), str(out), "--model", model_dir,
               "--max-new-tokens", str(args.max_new_tokens), "--num-beams", str(args.num_beams),
               "--rows-per-file", str(rows_per_file), *args.run_args.split()]
    if batch_size:
        command += ["--batch-size", str(batch_size)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("RAY_ADDRESS", None)  # a local Ray of its own, like `captioner run` on a laptop
    started = time.time()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = Sampler(child.pid)
    log, _ = child.communicate()
    sampler.stop()
    if child.returncode != 0:
        raise RuntimeError(f"captioner run failed ({child.returncode}):\n{log[-4000:]}")
    record = json.loads(next((out / schema.RUNS_DIR).glob("*/run.json")).read_text())
    # The markers' times, not the driver's: Ray Data hands the driver its first result late (seconds after the
    # marker was written), which would shorten the steady phase measured from the driver's side.
    markers = sorted((path.stat().st_mtime, json.loads(path.read_text())["counts"]["images"])
                     for path in (out / "_commits").glob("*.json"))
    return {"images": record["images"], "captioned": record["captioned"], "shards": len(markers),
            "caption_actors": len(sampler.actors),
            "startup_s": markers[0][0] - started, "elapsed_s": record["elapsed_s"],
            "images_per_s": steady_rate(markers, len(sampler.actors)),
            "images_per_s_with_startup": record["images_per_s"], "driver_peak_mib": sampler.peak_driver,
            "actor_peak_mib": sampler.peak_actor, "samples": sampler.samples}


def steady_rate(markers: list[tuple[float, int]], actors: int) -> float:
    """Images per second from the k-th commit marker to the last (``markers``: sorted (time, images)).

    With k caption actors the first k shards land together once each actor's first batch is done; measured from
    the first marker, two actors would count a whole batch as done in no time.
    """
    first = max(0, min(actors, len(markers) - 1) - 1)
    seconds = markers[-1][0] - markers[first][0]
    return sum(images for _, images in markers[first + 1:]) / seconds if seconds > 0 else float("nan")


# ---------------------------------------------------------------- decode


def decode_seconds(data: list[bytes], resize: images.Resize, limits: DecodeConfig, draft: bool) -> float:
    """Seconds of ``images.decode`` over ``data`` in this one process; ``draft=False`` turns Pillow's draft off."""
    no_draft = mock.patch.object(JpegImagePlugin.JpegImageFile, "draft", lambda self, mode, size: None)
    with contextlib.nullcontext() if draft else no_draft:
        start = time.perf_counter()
        for blob in data:
            result = images.decode(blob, [resize], formats=limits.formats, max_pixels=limits.max_pixels)
            assert isinstance(result, images.Decoded), result
        return time.perf_counter() - start


def child_seconds(data: list[bytes], resize: images.Resize, decoder: sandbox.Decoder) -> float:
    """Seconds of decoding ``data`` (with draft) in the bounded child process, as the pipeline's decode tasks do."""
    start = time.perf_counter()
    for blob in data:
        result = decoder.decode(blob, [resize])
        assert isinstance(result, images.Decoded), result
    return time.perf_counter() - start


def decode_row(kind: str, data: list[bytes], resize: images.Resize, limits: DecodeConfig, repeats: int) -> dict:
    """Draft, full and in-child decoding back to back in each repeat; the speed-up is the median of the repeats'
    ratios."""
    with sandbox.Decoder(limits.formats, limits.max_pixels, limits.timeout_s, limits.memory_mb) as decoder:
        decoder.decode(data[0], [resize])  # the child's start-up is not per image
        times = [(decode_seconds(data, resize, limits, True), decode_seconds(data, resize, limits, False),
                  child_seconds(data, resize, decoder)) for _ in range(repeats)]
    return {"inputs": kind, "mb_per_image": sum(map(len, data)) / len(data) / 1e6,
            "draft": len(data) / median([d for d, _, _ in times]), "full": len(data) / median([f for _, f, _ in times]),
            "child": len(data) / median([c for _, _, c in times]), "speedup": median([f / d for d, f, _ in times])}


# ---------------------------------------------------------------- the memory run


def memory_run(args: argparse.Namespace, cache: Path) -> int:
    """A long run with the demo model over tiny images: the driver's and an actor's RSS at start, middle, end."""
    folder = cache / "images" / f"tiny-{args.memory_run}"
    if not folder.exists():
        tmp = folder.with_name(folder.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        blobs = []
        for i in range(64):
            buf = io.BytesIO()
            textured(np.random.default_rng(i), 96, 64).save(buf, format="JPEG", quality=90)
            blobs.append(buf.getvalue())
        for i in range(args.memory_run):  # many objects, few distinct contents
            (tmp / f"{i // 1000:03d}").mkdir(exist_ok=True)
            (tmp / f"{i // 1000:03d}" / f"{i:06d}.jpg").write_bytes(blobs[i % len(blobs)])
        tmp.rename(folder)
    paths = sorted(folder.rglob("*.jpg"))
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        result = pipeline(paths, args.model_dir, Path(tmp) / "out", args, args.batch_size,
                          ResourceConfig.rows_per_file)
    # From the first shard's commit (startup done) to the last sample with the actor alive; a run too short to
    # be sampled after its first commit keeps its last sample with the actor alive.
    alive = [s for s in result["samples"] if s["actor_mib"]]
    running = [s for s in alive if s["at_s"] >= result["startup_s"]] or alive[-1:]
    points = {name: running[min(len(running) - 1, int(f * len(running)))] for name, f in
              (("start", 0.0), ("middle", 0.5), ("end", 1.0))} if running else {}
    print(f"memory run: {result['images']} images, demo model, job defaults, {result['elapsed_s']:.0f} s in all, "
          f"{result['images_per_s']:.0f} images/s after a {result['startup_s']:.1f} s startup")
    print(f"{'point':<8}{'at s':>6}{'driver MiB':>12}{'private':>9}{'actor MiB':>11}{'private':>9}")
    for name, p in points.items():
        print(f"{name:<8}{p['at_s']:>6.0f}{p['driver_mib']:>12}{p['driver_private_mib']:>9}{p['actor_mib']:>11}"
              f"{p['actor_private_mib']:>9}")
    print(f"{'peak':<8}{'':>6}{result['driver_peak_mib']:>12}{'':>9}{result['actor_peak_mib']:>11}")
    report = {"memory_run": {k: v for k, v in result.items() if k != "samples"}, "points": points,
              "samples": result["samples"]}
    write_json(args, report)
    return 0


def write_json(args: argparse.Namespace, report: dict) -> None:
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
        print(f"written to {args.json}", file=sys.stderr)


# ---------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="full", help="full (ViT-GPT2 architecture, random weights), demo, or a "
                        "captioner folder (default: %(default)s)")
    parser.add_argument("--images", type=int, default=256, help="images per measurement (default: %(default)s)")
    parser.add_argument("--inputs", choices=KINDS, default="camera-jpeg",
                        help="images for model-only, pipeline and baseline (default: %(default)s)")
    parser.add_argument("--decode-images", type=int, default=16, help="images per kind for the decode table")
    parser.add_argument("--batch-size", type=int, help="caption batch size of model-only and the pipeline "
                        "(default: the job's own, 32 on CPU; on a GPU 0 measures the best)")
    parser.add_argument("--max-new-tokens", type=int, default=GenerationConfig.max_new_tokens)
    parser.add_argument("--num-beams", type=int, default=GenerationConfig.num_beams)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of model-only, baseline, pipeline")
    parser.add_argument("--run-args", default="", help="more options for the pipeline's captioner run, e.g. "
                        "'--num-threads 1' to compare")
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out: model,baseline,pipeline,decode")
    parser.add_argument("--memory-run", type=int, metavar="N",
                        help="instead: one pipeline run over N tiny images with the demo model, sampling RSS")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "captioner-bench"),
                        help="where generated images and the full-size model are kept (default: %(default)s)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    if args.memory_run:
        args.model_dir = DEMO_MODEL
        return memory_run(args, cache)
    args.model_dir = {"full": None, "demo": DEMO_MODEL}.get(args.model, args.model) or str(vit_gpt2(cache / "vit-gpt2"))
    skip = set(filter(None, args.skip.split(",")))
    cuda = torch.cuda.is_available()
    device = model.default_device()
    generation = GenerationConfig(max_new_tokens=args.max_new_tokens, num_beams=args.num_beams)
    paths = image_files(cache, args.inputs, args.images)
    cpus = os.cpu_count() or 1
    config = RunConfig(input=InputConfig(str(paths[0].parent)), output="unused", model=ModelConfig(args.model_dir),
                       generation=generation, resources=ResourceConfig(batch_size=args.batch_size or None))
    resources = resolve(config.resources, cpus, float(torch.cuda.device_count()))
    report: dict = {"model": args.model, "inputs": args.inputs, "images": len(paths), "device": str(device),
                    "cpus": cpus, "generation": {"max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams},
                    "repeats": args.repeats}
    if cuda:
        report["gpu"] = torch.cuda.get_device_name()

    actor = None
    batch_size = resources.batch_size
    if "model" not in skip:
        actor = stages.CaptionActor(config, run_id="bench", num_threads=cpus, fingerprints=fingerprints(config))
        if cuda and not args.batch_size:
            batch_size, report["batch_size_search"] = pick_batch_size(actor, paths, config)
        batches = decoded_batches(paths, config, batch_size)
        run_actor(actor, batches[:1])  # warm-up
        report["flops_per_image"] = flops_per_image(actor, batches[0])
    report.update(batch_size=batch_size, model_only_threads=cpus, pipeline_threads=resources.num_threads,
                  run_args=args.run_args)

    rounds = []
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        for r in range(args.repeats):
            row: dict = {}
            if actor is not None:
                row["model_only"] = len(paths) / run_actor(actor, batches)
            if "baseline" not in skip:
                torch.set_num_threads(cpus)  # what a fresh process gets
                row["baseline"] = len(paths) / baseline(args.model_dir, paths, generation, device)
            if "pipeline" not in skip:
                # a shard per caption batch, so that the markers' times show the steady phase
                row["pipeline"] = pipeline(paths, args.model_dir, Path(tmp) / f"out-{r}", args, batch_size, batch_size)
                row["pipeline"].pop("samples")
            rounds.append(row)
            if row:
                seen = {k: v["images_per_s"] if isinstance(v, dict) else v for k, v in row.items()}
                print(f"round {r + 1}: " + ", ".join(f"{k} {v:.2f} images/s" for k, v in seen.items()),
                      file=sys.stderr)
    report["rounds"] = rounds

    rates = {key: median([r[key]["images_per_s"] if key == "pipeline" else r[key] for r in rounds])
             for key in ("model_only", "baseline", "pipeline") if rounds and key in rounds[0]}
    ratios = {}
    for den in ("model_only", "baseline"):
        if "pipeline" in rates and den in rates:
            ratios[f"pipeline/{den}"] = median([r["pipeline"]["images_per_s"] / r[den] for r in rounds])
    report.update(images_per_s=rates, ratios=ratios)
    if "pipeline" in rates:
        report["pipeline"] = {key: median([r["pipeline"][key] for r in rounds])
                              for key in ("startup_s", "driver_peak_mib", "actor_peak_mib")}
    if "flops_per_image" in report and "model_only" in rates:
        report["achieved_tflops"] = report["flops_per_image"] * rates["model_only"] / 1e12
        peak = next((v for k, v in PEAK_TFLOPS.items() if cuda and k in report["gpu"]), None)
        report["share_of_peak"] = report["achieved_tflops"] / peak if peak else None

    if "decode" not in skip:
        resize = model.describe(config.model).image.resize
        report["decode"] = []
        for kind in KINDS:
            data = [p.read_bytes() for p in image_files(cache, kind, args.decode_images)]
            report["decode"].append(decode_row(kind, data, resize, config.decode, args.repeats))

    print_table(report)
    write_json(args, report)
    return 0


def print_table(report: dict) -> None:
    rates, ratios = report["images_per_s"], report["ratios"]
    gen = report["generation"]
    print(f"model {report['model']}, {report['images']} x {report['inputs']}, {report['device']}, "
          f"{report['cpus']} CPUs, greedy" + (f" beams {gen['num_beams']}" if gen["num_beams"] > 1 else "") +
          f", max {gen['max_new_tokens']} new tokens, median of {report['repeats']}")
    if rates or ratios:
        print(f"{'measure':<30}{'value':>10}  notes")
    notes = {"model_only": f"CaptionActor, batch {report['batch_size']}, {report['model_only_threads']} threads",
             "pipeline": f"captioner run {report['run_args']}".rstrip() + ", startup excluded",
             "baseline": f"model card loop, batch {BASELINE_BATCH}"}
    for key, rate in rates.items():
        print(f"{key.replace('_', '-') + ' images/s':<30}{rate:>10.2f}  {notes[key]}")
    targets = {"pipeline/model_only": "target >= 0.85 on CPU, 0.95 on GPU",
               "pipeline/baseline": "target >= 1.3 on CPU, 10 on GPU"}
    for key, value in ratios.items():
        print(f"{key.replace('_', '-'):<30}{value:>10.2f}  {targets[key]}")
    if "pipeline" in report:
        p = report["pipeline"]
        print(f"{'pipeline startup s':<30}{p['startup_s']:>10.1f}  Ray, model load, first shard")
        print(f"{'peak RSS driver MiB':<30}{p['driver_peak_mib']:>10.0f}")
        print(f"{'peak RSS caption actor MiB':<30}{p['actor_peak_mib']:>10.0f}")
    if "achieved_tflops" in report:
        share = report["share_of_peak"]
        print(f"{'model-only TFLOP/s':<30}{report['achieved_tflops']:>10.3f}  "
              f"{report['flops_per_image'] / 1e9:.1f} GFLOP per image" +
              (f", {share:.1%} of the GPU's fp16 peak" if share else ""))
    if "decode" in report:
        print(f"\n{'decode, 1 core':<16}{'MB':>6}{'draft img/s':>13}{'full img/s':>12}{'speedup':>9}"
              f"{'in child img/s':>16}")
        for row in report["decode"]:
            print(f"{row['inputs']:<16}{row['mb_per_image']:>6.2f}{row['draft']:>13.1f}{row['full']:>12.1f}"
                  f"{row['speedup']:>8.1f}x{row['child']:>16.1f}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
