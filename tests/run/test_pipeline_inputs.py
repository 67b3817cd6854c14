"""End-to-end over inputs at scale's shapes: WebDataset tar shards on a real S3-protocol server, and a rerun from
a run's frozen manifest parts."""

import io
import json
import tarfile

import pyarrow.dataset as pads
import pytest

from captioner.config import GenerationConfig, InputConfig, ModelConfig, RunConfig, StorageConfig
from captioner.run import pipeline
from conftest import jpeg_bytes

pytestmark = pytest.mark.slow


def _config(tiny_model, input_uri, output, endpoint):
    return RunConfig(input=InputConfig(input_uri), output=output, model=ModelConfig(name=str(tiny_model)),
                     storage=StorageConfig(endpoint_url=endpoint), generation=GenerationConfig(max_new_tokens=6))


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_webdataset_shards_and_a_rerun_from_the_frozen_manifest(local_ray, tiny_model, s3, s3_server):
    fs, bucket = s3
    members = {"000000.jpg": jpeg_bytes(0), "000001 odd #name.é.jpg": jpeg_bytes(1), "sub/000002.png":
               jpeg_bytes(2, fmt="PNG")}
    siblings = {name.rsplit(".", 1)[0] + ext: data for name in members
                for ext, data in ((".txt", b"a caption"), (".json", json.dumps({"key": name}).encode()))}
    fs.pipe({f"{bucket}/shards/00000.tar": _tar({**members, **siblings}),
             f"{bucket}/shards/00001.tar": _tar({"000003.jpg": jpeg_bytes(3)})[:1000],  # cut inside its image
             f"{bucket}/shards/loose.jpg": jpeg_bytes(1)})  # member 000001 as a file of its own
    out = f"s3://{bucket}/out"
    summary = pipeline.run(_config(tiny_model, f"s3://{bucket}/shards/", out, s3_server))
    assert (summary.listed, summary.captioned, summary.failed) == (5, 4, 1)

    table = pads.dataset(f"{bucket}/out/captions", format="parquet", partitioning="hive", filesystem=fs).to_table()
    captions = {row["uri"]: row for row in table.to_pylist()}
    shard = f"s3://{bucket}/shards/00000.tar"
    assert sorted(captions) == sorted([f"{shard}#{name}" for name in members] + [f"s3://{bucket}/shards/loose.jpg"])
    assert captions[f"{shard}#000001 odd #name.é.jpg"]["caption"] == captions[f"s3://{bucket}/shards/loose.jpg"]["caption"]
    assert {row["etag"] for uri, row in captions.items() if uri.startswith(shard)} == {fs.info(shard)["ETag"].strip('"')}
    errors = pads.dataset(f"{bucket}/out/errors", format="parquet", filesystem=fs).to_table().to_pylist()
    assert [(e["uri"], e["error_type"]) for e in errors] == [(f"s3://{bucket}/shards/00001.tar", "corrupt_tar")]
    assert "truncated" in errors[0]["error"]

    frozen = f"{out}/runs/{summary.run_id}/manifest/*.parquet"
    again = pipeline.run(_config(tiny_model, frozen, out, s3_server))
    assert (again.listed, again.skipped, again.images) == (5, 5, 0)  # the same files, all done
    assert not fs.exists(f"{bucket}/out/runs/{summary.run_id}/todo")  # the plan's blocks are cleared
