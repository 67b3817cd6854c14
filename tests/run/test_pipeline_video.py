"""Videos beside images through the whole job: real Ray, real files, the local S3 server."""

from fractions import Fraction

import pyarrow.dataset as pads
import pytest

from captioner import schema
from captioner.config import GenerationConfig, InputConfig, ModelConfig, ResourceConfig, RunConfig, StorageConfig
from captioner.run import pipeline
from conftest import build_tiny_model, jpeg_bytes
from videos import write_audio_only, write_video

pytestmark = pytest.mark.slow
LANGS = ("en", "fr")


@pytest.fixture(scope="module")
def bilingual(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("bilingual"), languages=LANGS)


def _config(model, input_uri, output, **kwargs):
    return RunConfig(input=InputConfig(input_uri), output=output, model=ModelConfig(name=str(model)),
                     languages=LANGS, generation=GenerationConfig(max_new_tokens=4), **kwargs)


def _rows(output, filesystem=None):
    captions = pads.dataset(output + "/captions", format="parquet", partitioning="hive",
                            filesystem=filesystem).to_table().to_pylist()
    return captions


def _errors(output):
    return pads.dataset(output + "/errors", format="parquet").to_table().to_pylist()


def _archive(folder):
    """Videos of the codecs and containers archives hold, an image, and bad files; the segments each has."""
    folder.mkdir()
    segments = {
        write_video(folder / "h264.mp4", seconds=25): 3,
        write_video(folder / "vp9.webm", codec="libvpx-vp9"): 1,
        write_video(folder / "mpeg4.mov", codec="mpeg4"): 1,
        write_video(folder / "ntsc.mkv", codec="mpeg4", fps=Fraction(30000, 1001), seconds=12): 2,
        write_video(folder / "bframes.mp4", bframes=2): 1,
        write_video(folder / "portrait.m4v", size=(48, 64)): 1,
    }
    (folder / "photo.jpg").write_bytes(jpeg_bytes(3))
    good = folder / "h264.mp4"
    (folder / "truncated.mp4").write_bytes(good.read_bytes()[:3000])
    (folder / "text.mkv").write_text("not a video")
    write_audio_only(folder / "audio.mp4")
    errors = {"truncated.mp4": "truncated", "text.mkv": "not_a_video", "audio.mp4": "no_video_stream"}
    return {str(p): n for p, n in segments.items()}, errors


def test_videos_and_images_in_one_run_every_file_once(local_ray, bilingual, tmp_path):
    segments, bad = _archive(tmp_path / "archive")
    out = str(tmp_path / "out")
    summary = pipeline.run(_config(bilingual, str(tmp_path / "archive"), out))
    assert (summary.listed, summary.captioned, summary.failed) == (10, 7, 3)
    assert summary.segments == sum(segments.values())
    captions, errors = _rows(out), _errors(out)
    assert {e["uri"].rsplit("/", 1)[1]: e["error_type"] for e in errors} == bad
    keys = [(r["uri"], r[schema.SEGMENT], r["lang"]) for r in captions]
    assert len(keys) == len(set(keys)), "every (file, segment, language) exactly once"
    for uri, count in segments.items():
        rows = [r for r in captions if r["uri"] == uri]
        assert sorted({r[schema.SEGMENT] for r in rows}) == list(range(count))
        assert {r["lang"] for r in rows} == set(LANGS) and all(r[schema.SEGMENTS] == count for r in rows)
        assert all(0 <= r[schema.START_S] < r[schema.END_S] for r in rows)
    photo = [r for r in captions if r["uri"].endswith("photo.jpg")]
    assert len(photo) == 2 and all(r[schema.SEGMENT] is None and r[schema.START_S] is None for r in photo)


def test_a_killed_run_resumes_per_segment(local_ray, bilingual, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    write_video(folder / "long.mp4", seconds=45)
    out = tmp_path / "out"
    config = _config(bilingual, str(folder), str(out), resources=ResourceConfig(rows_per_file=1))
    assert pipeline.run(config).segments == 5
    markers = sorted((out / "_commits").glob("*.json"))
    assert len(markers) == 5  # a shard per segment
    for marker in markers[:2]:  # as if the run had died before committing these two
        marker.unlink()
    again = pipeline.run(config)
    assert (again.captioned, again.segments) == (1, 2)
    captions = _rows(str(out))
    assert sorted((r[schema.SEGMENT], r["lang"]) for r in captions) == sorted(
        (k, lang) for k in range(5) for lang in LANGS)
    assert pipeline.run(config).images == 0  # now complete: nothing to do


def test_a_video_cut_short_keeps_what_decodes_and_is_not_redone(local_ray, bilingual, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    cut = write_video(folder / "cut.mp4", seconds=35, faststart=True)
    cut.write_bytes(cut.read_bytes()[: int(cut.stat().st_size * 0.45)])  # its index still says 35 s
    out = str(tmp_path / "out")
    summary = pipeline.run(_config(bilingual, str(folder), out))
    assert (summary.captioned, summary.failed) == (1, 0) and summary.segments + summary.failed_segments == 4
    assert summary.failed_segments >= 1
    failed = {e[schema.SEGMENT] for e in _errors(out)}
    assert {r[schema.SEGMENT] for r in _rows(out)}.isdisjoint(failed) and 3 in failed
    assert pipeline.run(_config(bilingual, str(folder), out)).images == 0  # failed for good: not tried again


def test_a_video_on_the_object_store(local_ray, bilingual, s3, s3_server, tmp_path):
    fs, bucket = s3
    video = write_video(tmp_path / "clip.webm", codec="libvpx-vp9", seconds=12)
    fs.put(str(video), f"{bucket}/in/clip.webm")
    out = f"s3://{bucket}/out"
    summary = pipeline.run(_config(bilingual, f"s3://{bucket}/in/", out,
                                   storage=StorageConfig(endpoint_url=s3_server)))
    assert (summary.captioned, summary.segments) == (1, 2)
    captions = _rows(f"{bucket}/out", fs)
    assert sorted((r[schema.SEGMENT], r["lang"]) for r in captions) == [(0, "en"), (0, "fr"), (1, "en"), (1, "fr")]


def test_a_video_git_captions_each_segment_from_its_frames(local_ray, tmp_path):
    """GIT with a temporal embedding per frame: each segment's 3 frames, spread over it, as its own generate."""
    import torch
    from transformers import AutoImageProcessor, AutoTokenizer, GitForCausalLM

    from captioner.media.video import frame_at, frame_times
    from families import build_tiny_git

    model = build_tiny_git(tmp_path / "git-vatex", frames=3)
    folder = tmp_path / "videos"
    folder.mkdir()
    video = write_video(folder / "clip.mp4", seconds=16)
    out = str(tmp_path / "out")
    config = RunConfig(input=InputConfig(str(folder)), output=out, model=ModelConfig(name=str(model)),
                       generation=GenerationConfig(max_new_tokens=6))
    assert pipeline.run(config).segments == 2
    rows = _rows(out)
    assert sorted(r[schema.SEGMENT] for r in rows) == [0, 1]
    processor, tokenizer = AutoImageProcessor.from_pretrained(model), AutoTokenizer.from_pretrained(model)
    git = GitForCausalLM.from_pretrained(model).eval()
    for row in rows:
        with open(video, "rb") as f:
            frames = [frame_at(f, t) for t in frame_times(row[schema.START_S], row[schema.END_S], 3)]
        pixels = processor(images=frames, return_tensors="pt").pixel_values[None]  # (1, 3 frames, 3, H, W)
        with torch.inference_mode():
            reference = git.generate(pixel_values=pixels, max_new_tokens=6)
        assert row["caption"] == tokenizer.batch_decode(reference, skip_special_tokens=True)[0].strip()
