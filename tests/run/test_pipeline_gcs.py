"""The whole job reading a gs:// archive (a GCS emulator), as a user runs it: a run, and a rerun that writes nothing;
a gs:// output refused in one line."""

import os
import subprocess
import sys

import pytest

from conftest import jpeg_bytes
from pipeline_runs import read_captions

pytestmark = pytest.mark.slow


def _env(gcs_server: str) -> dict:
    # GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT off: the emulator has no storage-control API for gcsfs to ask a bucket's
    # layout with (real GCS has), which would cost each client a minute's timeout
    return {**os.environ, "RAY_ADDRESS": "local", "STORAGE_EMULATOR_HOST": gcs_server,
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


def test_a_gs_archive_is_captioned_and_a_rerun_writes_nothing(gcs_server, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server)
    from gcsfs.core import GCSFileSystem

    fs = GCSFileSystem(token="anon", project="test", skip_instance_cache=True)
    fs.mkdir("archive")
    keys = [f"archive/photos/{name}.jpg" for name in ("a", "b", "nested/c", "nested/d")]
    for i, key in enumerate(keys):
        fs.pipe_file(key, jpeg_bytes(i))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "captioner.cli", "run", "gs://archive/photos", str(out), "--anon",
               "--model", str(tiny_model), "--max-new-tokens", "6"]
    first = subprocess.run(command, env=_env(gcs_server), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "captioned       4" in first.stdout
    assert set(read_captions(str(out))) == {(f"gs://{key}", "en") for key in keys}
    again = subprocess.run(command, env=_env(gcs_server), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "captioned       0" in again.stdout and "already done    4" in again.stdout


def test_a_gs_output_is_refused_in_one_line(gcs_server, tmp_path):
    (tmp_path / "photos").mkdir()
    done = subprocess.run([sys.executable, "-m", "captioner.cli", "run", str(tmp_path / "photos"),
                           "gs://archive/captions", "--anon"], env=_env(gcs_server), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "does not write its output to Google Cloud Storage yet" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
