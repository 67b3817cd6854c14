import os
import subprocess
import sys

import pyarrow as pa
import pytest

from captioner.store import fs as storage


def test_atomic_write_leaves_only_the_file(tmp_path):
    target = tmp_path / "deep" / "x.parquet"
    storage.write_parquet_atomic(str(target), pa.table({"a": [1, 2]}))
    storage.write_parquet_atomic(str(target), pa.table({"a": [3]}))  # replaced, not appended
    assert [p.name for p in target.parent.iterdir()] == ["x.parquet"]
    assert storage.read_bytes(str(target))[:4] == b"PAR1"


def test_s3_reading_and_writing(s3, s3_server):
    fs, bucket = s3
    fs.pipe(f"{bucket}/photos/sub/two.jpg", b"defg")
    opts = {"endpoint_url": s3_server}
    assert storage.read_bytes(f"s3://{bucket}/photos/sub/two.jpg", opts) == b"defg"
    assert storage.identity(f"s3://{bucket}/photos/sub/two.jpg", opts)[0] == 4
    storage.write_bytes_atomic(f"s3://{bucket}/out/x.bin", b"xyz", opts)
    assert fs.cat(f"{bucket}/out/x.bin") == b"xyz"


def test_redact_drops_credentials_and_signatures():
    assert storage.redact("https://user:secret@host/a.jpg?X-Amz-Signature=abc") == "https://host/a.jpg"
    assert storage.redact("s3://bucket/key.jpg") == "s3://bucket/key.jpg"
    assert storage.redact("/local/with?odd.jpg") == "/local/with?odd.jpg"


def _quick(endpoint):
    """The run's S3 options (retries and timeouts as configured) for ``endpoint``."""
    from captioner.config import StorageConfig

    return StorageConfig(endpoint_url=endpoint).options("s3://any")


def test_reads_writes_and_listings_survive_throttling_and_resets(s3, faulty_s3):
    fs, bucket = s3
    faulty_s3.error_rate, faulty_s3.reset_rate = 0.3, 0.1
    opts = _quick(faulty_s3.url)
    for i in range(10):
        storage.write_bytes_atomic(f"s3://{bucket}/out/{i}.bin", bytes([i]) * 1000, opts)
    storage.write_parquet_atomic(f"s3://{bucket}/out/t.parquet", pa.table({"a": list(range(100))}), opts)
    assert len(fs.find(f"{bucket}/out/")) == 11
    assert all(storage.read_bytes(f"s3://{bucket}/out/{i}.bin", opts) == bytes([i]) * 1000 for i in range(10))
    assert storage.read_bytes(f"s3://{bucket}/out/3.bin", opts, limit=10) == bytes([3]) * 10
    assert faulty_s3.counts["slowdown"] >= 5 and faulty_s3.counts["reset"] >= 1, faulty_s3.counts


def test_access_check_passes_and_leaves_nothing(s3, s3_server):
    fs, bucket = s3
    fs.pipe(f"{bucket}/in/a.jpg", b"x")
    storage.check_access(f"s3://{bucket}/in/", _quick(s3_server))
    storage.check_access(f"s3://{bucket}/out", _quick(s3_server), write=True)
    assert fs.find(bucket) == [f"{bucket}/in/a.jpg"]
    storage.check_access("/local/folder/that/does/not/exist", {})  # local paths report their own errors


def test_unreachable_store_fails_fast_naming_the_bucket(faulty_s3):
    """Refused or reset, the check gives up within fewer requests than one request of the run may take."""
    from captioner.config import StorageConfig
    from faulty_proxy import closed_port

    with pytest.raises(storage.StoreError) as caught:
        storage.check_access("s3://photos-bucket/in/", _quick(f"http://127.0.0.1:{closed_port()}"))
    assert "cannot reach" in str(caught.value) and "'photos-bucket'" in str(caught.value)
    faulty_s3.reset_rate = 1.0
    with pytest.raises(storage.StoreError, match="cannot reach .* for bucket 'photos-bucket'"):
        storage.check_access("s3://photos-bucket/in/", _quick(faulty_s3.url))
    assert 0 < faulty_s3.counts["reset"] < StorageConfig().max_attempts


def test_forbidden_and_missing_buckets_say_which_permission(s3, faulty_s3):
    fs, bucket = s3
    fs.pipe(f"{bucket}/in/a.jpg", b"x")
    opts = _quick(faulty_s3.url)
    faulty_s3.deny = {("PUT", "")}
    with pytest.raises(storage.StoreError, match=f"lack s3:PutObject on bucket '{bucket}'"):
        storage.check_access(f"s3://{bucket}/out", opts, write=True)
    faulty_s3.deny = {("DELETE", "")}
    with pytest.raises(storage.StoreError, match="s3:DeleteObject.*probe object .* is left behind"):
        storage.check_access(f"s3://{bucket}/out", opts, write=True)
    faulty_s3.deny = {("HEAD", "")}
    with pytest.raises(storage.StoreError, match="lack s3:GetObject"):
        storage.check_access(f"s3://{bucket}/in/", opts)
    faulty_s3.deny = {("GET", "list-type")}
    with pytest.raises(storage.StoreError, match=f"no permission for listing s3://{bucket}/in.*s3:ListBucket"):
        storage.check_access(f"s3://{bucket}/in/", opts)
    with pytest.raises(storage.StoreError, match="bucket 'no-such-bucket' does not exist"):
        storage.check_access("s3://no-such-bucket/in/", _quick(faulty_s3.upstream_url))


@pytest.mark.parametrize("url, package, extra", [("az://box/photos", "adlfs", "azure"),
                                                 ("abfs://box/photos", "adlfs", "azure"),
                                                 ("gs://bucket/photos", "gcsfs", "gcs")])
def test_a_url_whose_backend_is_not_installed_says_in_one_line_what_to_install(tmp_path, url, package, extra):
    """In a Python where the backend cannot be imported (as in a clean install without the extra): exit 2, one
    line, no traceback."""
    code = ("import sys; sys.modules['adlfs'] = sys.modules['gcsfs'] = None; from captioner import cli; "
            "sys.exit(cli.main(sys.argv[1:]))")
    env = {**os.environ, "RAY_ADDRESS": "local"}
    done = subprocess.run([sys.executable, "-c", code, "run", url, str(tmp_path / "out")], capture_output=True,
                          text=True, env=env, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    scheme = url.split(":")[0]
    assert f"{scheme}:// URLs need {package}, which is not installed: pip install 'captioner[{extra}]'" in lines[0]
