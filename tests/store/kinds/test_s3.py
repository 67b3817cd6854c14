"""The S3 store kind through a proxy that behaves as S3 look-alikes do where they differ from AWS (unquoted
If-Match, 412 for a missing key, DeleteObject ignoring If-Match): the lease holds, renews, refuses a second run,
is taken over by exactly one contender when it lapses, and a release never removes another run's lease. A store
that ignores conditional writes altogether is refused by name."""

import json

import pytest

from captioner.config import StorageConfig
from captioner.store import fs as storage
from captioner.store.lease import Lease, LeaseLost, OutputBusy
from leases import two_contenders_for_a_lapsed_lease

LOOK_ALIKE = ["unquoted-if-match", "412-for-missing", "delete-ignores-if-match"]


def _options(endpoint: str) -> dict:
    return StorageConfig(endpoint_url=endpoint).options("s3://")


@pytest.fixture(params=LOOK_ALIKE)
def look_alike(request, faulty_s3):
    faulty_s3.quirks = {request.param}
    return faulty_s3


def _holder(fs, bucket: str) -> dict:
    return json.loads(fs.cat_file(f"{bucket}/out/_lease.json"))


def test_the_lease_holds_renews_and_refuses_a_second_run(s3, look_alike):
    fs, bucket = s3
    out, options = f"s3://{bucket}/out", _options(look_alike.url)
    with Lease(out, "first", options) as first:
        for _ in range(3):
            assert first._holder.renew()
        with pytest.raises(OutputBusy, match="run first"):
            Lease(out, "second", options).__enter__()
        first.check()
    assert _holder(fs, bucket)["released"]
    with Lease(out, "third", options) as third:  # a released lease is taken at once
        third.check()
        assert _holder(fs, bucket)["run_id"] == "third"


def test_a_lapsed_lease_goes_to_exactly_one_of_two_contenders_and_the_old_holders_release_leaves_it(s3, look_alike):
    """Both contenders find the lease lapsed; the late one, whose takeover reaches the store after the other's, is
    refused."""
    fs, bucket = s3
    out, options = f"s3://{bucket}/out", _options(look_alike.url)
    with two_contenders_for_a_lapsed_lease(out, options, look_alike) as (stale, early, late):
        assert isinstance(late, OutputBusy) and "run early" in str(late)
        stale._holder.release()  # a late release by the old holder, which has not noticed: it must not remove it
        early.check()
        assert _holder(fs, bucket)["run_id"] == "early"
        with pytest.raises(LeaseLost):
            stale.check()


def test_a_lease_removed_under_its_holder_is_lost(s3, look_alike):
    fs, bucket = s3
    with Lease(f"s3://{bucket}/out", "holder", _options(look_alike.url)) as lease:
        fs.rm_file(f"{bucket}/out/_lease.json")  # an operator's clean-up, say
        assert not lease._holder.renew()
        with pytest.raises(LeaseLost):
            lease.check()


def test_a_store_that_ignores_conditional_writes_is_refused_by_name(s3, faulty_s3):
    fs, bucket = s3
    faulty_s3.quirks = {"no-conditional-writes"}
    with pytest.raises(storage.StoreError, match=f"store at {faulty_s3.url} ignores conditional writes"):
        storage.check_access(f"s3://{bucket}/out", _options(faulty_s3.url), write=True)
    assert fs.ls(bucket) == []  # its probe removed
    storage.check_access(f"s3://{bucket}/photos", _options(faulty_s3.url))  # as an input it is fine
