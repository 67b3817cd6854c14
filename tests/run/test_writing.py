import subprocess
import sys

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
    assert counts.to_pylist()[0] == {"images": 3, "captioned": 2, "failed": 1, "segments": 0,
                                     "failed_segments": 0, "captions": 4, "empty_captions": 0}
    shards = state.committed(f"s3://{bucket}/out", store.options("s3://"))
    assert len(shards) == 1 and shards[0].counts["captions"] == 4


def test_the_read_and_write_stages_import_no_torch():
    """Every CPU worker of a run imports them: without torch a worker starts in a moment and stays small."""
    code = ("import sys, captioner.run.reading, captioner.run.writing\n"
            "print(sorted({'torch', 'transformers'} & set(sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
