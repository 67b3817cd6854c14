"""Video decoding: frames per second per core with keyframe seeking (what captioner does) against decoding every
frame, on a 1-minute 1080p H.264 clip made here; and video segments captioned per second by the whole job.

    python benchmarks/video.py                       # decode table, then the pipeline on 96 short clips
    python benchmarks/video.py --skip pipeline --repeats 5

Prints a table and a JSON line; figures are medians of --repeats runs in this process (one core: the decode
child has one thread), the pipeline's from one `captioner run` in a child process.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from captioner.media.image import Resize
from captioner.media.video import VideoPlan, decode_video, probe

CACHE = Path(tempfile.gettempdir()) / "captioner-bench" / "video"


def clip(path: Path, seconds: int, size: tuple[int, int], fps: int = 30, gop: int = 60) -> Path:
    """A moving gradient with noise, H.264 at ``size``, a keyframe every ``gop`` frames (2 s, as cameras do)."""
    if path.exists():
        return path
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 40, (height, width, 3), dtype=np.uint8)
    ramp = np.linspace(0, 200, width, dtype=np.float32)[None, :, None]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "g": str(gop)})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(seconds * fps):
            frame = ((ramp + 3 * i) % 200).astype(np.uint8) + noise
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.broadcast_to(frame, (height, width, 3)).copy(),
                                                                   format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def seeking(path: Path, frames_per_segment: int) -> tuple[float, int]:
    """Seconds and frames for captioner's own decode: 10 s segments, frames spread over each."""
    plan = VideoPlan(segment_s=10, max_video_s=3600, max_pixels=10**9)
    started = time.perf_counter()
    with open(path, "rb") as f:
        container, stream, duration = probe(f, plan)
        result = decode_video(container, stream, duration, [Resize(224, 224)], [frames_per_segment], plan)
    return time.perf_counter() - started, sum(len(s.pixels[0]) for s in result.decoded)


def every_frame(path: Path) -> tuple[float, int]:
    """Seconds and frames to decode the whole clip, frame by frame, on one thread."""
    import av

    started = time.perf_counter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        count = sum(1 for _ in container.decode(stream))
    return time.perf_counter() - started, count


def pipeline(folder: Path, videos: int, seconds: int) -> dict:
    """`captioner run` over ``videos`` 480p clips with the demo model: segments per second over the run (Ray's
    start and the model's load included: on a run this small they are most of it)."""
    paths = [clip(folder / f"v{i}.mp4", seconds, (854, 480)) for i in range(videos)]
    out = Path(tempfile.mkdtemp()) / "out"
    command = [sys.executable, "-m", "captioner.cli", "run", str(paths[0].parent), str(out), "--segment-s", "10"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    record = json.loads(next((out / "runs").glob("*/run.json")).read_text())
    return {"videos": videos, "segments": record["segments"], "wall_s": round(elapsed, 1),
            "run_s": round(record["elapsed_s"], 1), "segments_per_s": round(record["segments"] / record["elapsed_s"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", default="", help="comma-separated: decode, pipeline")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    report: dict = {"cpu_count": os.cpu_count()}
    if "decode" not in skip:
        path = clip(CACHE / "1080p-60s.mp4", 60, (1920, 1080))
        rows = {}
        for name, run in (("seek, 1 frame/segment", lambda: seeking(path, 1)),
                          ("seek, 8 frames/segment", lambda: seeking(path, 8)),
                          ("decode every frame", lambda: every_frame(path))):
            timings = [run() for _ in range(args.repeats)]
            seconds = statistics.median(t for t, _ in timings)
            rows[name] = {"s": round(seconds, 3), "frames": timings[0][1],
                          "frames_per_s": round(timings[0][1] / seconds, 1), "video_s_per_s": round(60 / seconds, 1)}
        report["decode_1080p_60s"] = rows
        print(f"{'1-minute 1080p H.264, one core':32} {'seconds':>8} {'frames':>7} {'frames/s':>9} {'video s/s':>10}")
        for name, row in rows.items():
            print(f"{name:32} {row['s']:8.3f} {row['frames']:7d} {row['frames_per_s']:9.1f} "
                  f"{row['video_s_per_s']:10.1f}")
    if "pipeline" not in skip:
        report["pipeline"] = pipeline(CACHE / "clips12", videos=96, seconds=12)
        print(f"pipeline: {report['pipeline']}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
