import os
import threading

import pytest

from captioner.store import listing


def _all(url, options=None, **kwargs):
    return [row for page in listing.pages(url, options, **kwargs) for row in page]


def test_a_local_tree_is_listed_once_with_sizes_and_version_tags(tmp_path):
    for i in range(30):
        folder = tmp_path / f"d{i % 7}" / f"e{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.jpg").write_bytes(b"x" * i)
    (tmp_path / "top.jpg").write_bytes(b"1")
    os.symlink(tmp_path, tmp_path / "d0" / "loop")  # a link back up is not followed
    rows = _all(str(tmp_path), listers=4)
    assert sorted(r[0] for r in rows) == sorted(str(p) for p in tmp_path.rglob("*.jpg") if "loop" not in str(p))
    sizes = {os.path.basename(r[0]): r[1] for r in rows}
    assert sizes["29.jpg"] == 29 and sizes["top.jpg"] == 1
    assert all(r[2].startswith("mtime:") for r in rows)


def test_wanted_filters_and_a_single_file_is_its_own_listing(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"1")
    (tmp_path / "b.txt").write_bytes(b"2")
    assert [r[0] for r in _all(str(tmp_path), wanted=lambda u: u.endswith(".jpg"))] == [str(tmp_path / "a.jpg")]
    assert [r[0] for r in _all(str(tmp_path / "b.txt"))] == [str(tmp_path / "b.txt")]


def test_a_missing_input_says_what_to_check(tmp_path):
    with pytest.raises(FileNotFoundError, match="check the path"):
        _all(str(tmp_path / "nope"))


def test_thousands_of_keys_under_many_prefixes_are_each_found_once(s3, s3_server):
    fs, bucket = s3
    keys = [f"photos/{i % 40:02d}/{i % 3}/{i:05d}.jpg" for i in range(2000)] + ["photos/top.jpg"]
    fs.pipe({f"{bucket}/{k}": k.encode() for k in keys})
    fs.pipe(f"{bucket}/elsewhere/x.jpg", b"not under the prefix")
    rows = _all(f"s3://{bucket}/photos", {"endpoint_url": s3_server})
    assert len(rows) == len(keys)  # each once
    assert {r[0] for r in rows} == {f"s3://{bucket}/{k}" for k in keys}
    assert all(r[1] == len(r[0].split(f"{bucket}/", 1)[1]) for r in rows)
    assert all(r[2] and not r[2].startswith('"') for r in rows)  # the store's ETags, unquoted


def test_listing_survives_throttling(s3, faulty_s3):
    from captioner.config import StorageConfig

    fs, bucket = s3
    fs.pipe({f"{bucket}/in/{i % 5}/{i}.jpg": b"x" for i in range(50)})
    faulty_s3.error_rate = 0.3
    rows = _all(f"s3://{bucket}/in/", StorageConfig(endpoint_url=faulty_s3.url).options("s3://any"))
    assert len({r[0] for r in rows}) == len(rows) == 50
    assert faulty_s3.counts["slowdown"] >= 1


def test_stopping_early_stops_the_listers(tmp_path):
    for i in range(50):
        (tmp_path / f"d{i}").mkdir()
        (tmp_path / f"d{i}" / "a.jpg").write_bytes(b"1")
    before = threading.active_count()
    pages = listing.pages(str(tmp_path), listers=2)
    next(pages)
    pages.close()
    assert threading.active_count() == before
