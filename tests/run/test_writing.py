import json
import subprocess
import sys

import pyarrow.dataset as pads

from captioner.config import StorageConfig
from captioner.run import writing
from captioner.store import state
from results import image_results


def test_a_shard_whose_write_is_refused_once_is_written_again_and_committed_once(s3, faulty_s3):
    fs, bucket = s3
    store = StorageConfig(endpoint_url=faulty_s3.url)
    faulty_s3.deny_once.append(("PUT", "captions/lang%3Den"))  # the S3 client never retries a 403: ours must
    counts = writing.write(image_results(["a", "b", "c"], failed={"c": "truncated"}), f"s3://{bucket}/out", store)
    assert faulty_s3.counts["denied"] == 1
    assert {k: v for k, v in counts.to_pylist()[0].items() if k != "languages"} == {
        "images": 3, "captioned": 2, "failed": 1, "segments": 0, "failed_segments": 0, "captions": 4,
        "empty_captions": 0}
    shards = state.committed(f"s3://{bucket}/out", store.options("s3://"))
    assert len(shards) == 1 and shards[0].counts["captions"] == 4


def test_the_read_and_write_stages_import_no_torch():
    """Every CPU worker of a run imports them: without torch a worker starts in a moment and stays small."""
    code = ("import sys, captioner.run.reading, captioner.run.writing\n"
            "print(sorted({'torch', 'transformers'} & set(sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_each_caption_is_written_with_the_language_it_reads_as_and_the_shard_counts_those_that_differ(tmp_path):
    texts = {("a", "en"): "a dog sleeping on a sofa", ("a", "fr"): "un chien qui dort sur un canapé",
             ("b", "en"): "a cat looking out of the window", ("b", "fr"): "a cat looking out of the window"}
    counts = writing.write(image_results(["a", "b", "c"], failed={"c": "truncated"}, texts=texts), str(tmp_path),
                           StorageConfig(), languages=("en", "fr")).to_pylist()[0]
    assert json.loads(counts["languages"]) == {"en": {"captions": 2, "wrong_language": 0, "not_identified": 0},
                                               "fr": {"captions": 2, "wrong_language": 1, "not_identified": 0}}
    rows = pads.dataset(tmp_path / "captions", format="parquet", partitioning="hive").to_table().to_pylist()
    read_as = {(r["uri"], r["lang"]): r["detected_lang"] for r in rows}
    assert read_as == {("a", "en"): "en", ("a", "fr"): "fr", ("b", "en"): "en", ("b", "fr"): "en"}
    assert all(0.5 <= r["detected_lang_confidence"] <= 1 for r in rows)
