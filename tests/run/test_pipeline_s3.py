"""End-to-end: the real job on real Ray over a real S3-protocol server (moto), through a proxy where the store must
throttle, reset, refuse or be unreachable; and keys no filesystem would allow."""

import pytest

from captioner.config import ResourceConfig
from captioner.run import pipeline
from conftest import jpeg_bytes
from pipeline_runs import read_captions, read_errors, run_config

pytestmark = pytest.mark.slow


def test_s3_in_and_out(local_ray, tiny_model, s3, s3_server):
    fs, bucket = s3
    for i in range(5):
        fs.pipe(f"{bucket}/photos/{'sub/' if i % 2 else ''}img{i}.jpg", jpeg_bytes(i))
    fs.pipe(f"{bucket}/photos/broken.jpg", b"not an image")
    out = f"s3://{bucket}/captions-out"
    summary = pipeline.run(run_config(tiny_model, f"s3://{bucket}/photos/", out, endpoint=s3_server,
                                   languages=("en",)))
    assert (summary.captioned, summary.failed) == (5, 1)
    captions = read_captions(f"{bucket}/captions-out", fs)
    assert sorted(uri for uri, _ in captions) == sorted(
        f"s3://{bucket}/photos/{'sub/' if i % 2 else ''}img{i}.jpg" for i in range(5)
    )
    assert all(row["etag"] and row["size"] > 0 for row in captions.values())
    assert [e["error_type"] for e in read_errors(f"{bucket}/captions-out", fs)] == ["not_an_image"]
    assert fs.exists(f"{bucket}/captions-out/runs/{summary.run_id}/manifest/part-00000.parquet")


def _outputs(fs, prefix):
    captions = {r["uri"]: r["caption"] for r in read_captions(prefix, fs).values()}
    errors = {e["uri"]: e["error_type"] for e in read_errors(prefix, fs)}
    return captions, errors


def test_throttled_and_resetting_store_gives_the_same_output(local_ray, tiny_model, s3, s3_server, faulty_s3):
    fs, bucket = s3
    for i in range(24):
        fs.pipe(f"{bucket}/in/img{i:02d}.jpg", jpeg_bytes(i))
    fs.pipe(f"{bucket}/in/broken.jpg", b"not an image")
    clean = pipeline.run(run_config(tiny_model, f"s3://{bucket}/in/", f"s3://{bucket}/clean", endpoint=s3_server,
                                 resources=ResourceConfig(rows_per_file=5)))
    faulty_s3.error_rate, faulty_s3.reset_rate = 0.10, 0.05
    faulty = pipeline.run(run_config(tiny_model, f"s3://{bucket}/in/", f"s3://{bucket}/faulty", endpoint=faulty_s3.url,
                                  resources=ResourceConfig(rows_per_file=5)))
    assert faulty_s3.counts["slowdown"] + faulty_s3.counts["reset"] >= 3, faulty_s3.counts  # ~11 expected
    assert (faulty.captioned, faulty.failed) == (clean.captioned, clean.failed) == (24, 1)
    assert _outputs(fs, f"{bucket}/faulty") == _outputs(fs, f"{bucket}/clean")


def test_unreachable_or_forbidden_store_fails_fast_and_writes_nothing(local_ray, tiny_model, s3, faulty_s3,
                                                                        tmp_path):
    from captioner.store.fs import StoreError
    from faulty_proxy import closed_port

    with pytest.raises(StoreError, match="cannot reach the object store .* for bucket 'photos'"):
        pipeline.run(run_config(tiny_model, "s3://photos/in/", str(tmp_path / "out"),
                             endpoint=f"http://127.0.0.1:{closed_port()}"))
    assert not (tmp_path / "out").exists()

    fs, bucket = s3
    fs.pipe(f"{bucket}/in/img.jpg", jpeg_bytes(0))
    faulty_s3.deny = {("PUT", ""), ("POST", "")}
    with pytest.raises(StoreError, match=f"writing to s3://{bucket}/out: the credentials lack s3:PutObject"):
        pipeline.run(run_config(tiny_model, f"s3://{bucket}/in/", f"s3://{bucket}/out", endpoint=faulty_s3.url))
    assert fs.find(bucket) == [f"{bucket}/in/img.jpg"]


HOSTILE_KEYS = ["in/../../../../escape.jpg", "in//double-slash.jpg", "in/./dot.jpg", "in/" + "é" * 300 + ".jpg",
                "in/\u202eright-to-left.jpg", "in/percent%2F..%2Fx.jpg", "in/q?x=1#frag.jpg",
                "in/back\\..\\slash.jpg", "in/..jpg"]


def test_hostile_keys_never_write_outside_output(local_ray, tiny_model, s3, s3_server, tmp_path):
    import re

    fs, bucket = s3
    for i, key in enumerate(HOSTILE_KEYS):
        fs.pipe(f"{bucket}/{key}", jpeg_bytes(i))
    listed = {k.split("/", 1)[1] for k in fs.find(f"{bucket}/in")}
    assert listed == set(HOSTILE_KEYS), listed  # the store keeps every key as it is
    root = tmp_path / "deep" / "er"
    out = root / "out"
    summary = pipeline.run(run_config(tiny_model, f"s3://{bucket}/in/", str(out), endpoint=s3_server))
    assert summary.captioned == len(HOSTILE_KEYS)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and all(out in p.parents for p in written), written
    ours = re.compile(r"(captions/lang=en|errors)/part-[0-9a-f]{24}\.parquet|_commits/part-[0-9a-f]{24}\.json|"
                      r"runs/[0-9TZ]+-[0-9a-f]{6}/(manifest/part-[0-9]{5}\.parquet|run\.json)|"
                      r"_lease\.json")  # on an object store the released lease stays, a conditional write never deletes
    assert all(ours.fullmatch(str(p.relative_to(out))) for p in written), written
    assert {uri for uri, _ in read_captions(str(out))} == {f"s3://{bucket}/{k}" for k in HOSTILE_KEYS}

    pipeline.run(run_config(tiny_model, f"s3://{bucket}/in/", f"s3://{bucket}/out", endpoint=s3_server))
    outside = [k for k in fs.find(bucket) if not k.startswith(f"{bucket}/in/") and not k.startswith(f"{bucket}/out/")]
    assert outside == []
    assert all(ours.fullmatch(k.split("/out/", 1)[1]) for k in fs.find(f"{bucket}/out"))
