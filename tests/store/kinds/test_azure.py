"""The Azure store kind on a real Azure Blob Storage server (Azurite), through a proxy where a request must be held:
the one-writer lease, taken over when it lapses by exactly one of two contenders, and the access check failing in
seconds with what is missing."""

import json
import time

import pytest

from captioner.store import fs as storage
from captioner.store.lease import Lease, LeaseLost, OutputBusy
from faulty_proxy import closed_port
from leases import two_contenders_for_a_lapsed_lease


def test_a_second_run_is_refused_while_the_first_holds_the_lease(azure):
    fs, container = azure
    out = f"az://{container}/out"
    with Lease(out, "first") as first:
        with pytest.raises(OutputBusy, match="run first"):
            Lease(out, "second").__enter__()
        first.check()
        assert json.loads(fs.cat_file(f"{container}/out/_lease.json"))["run_id"] == "first"
    assert not fs.exists(f"{container}/out/_lease.json")  # released by a conditional delete
    with Lease(out, "third"):
        pass


@pytest.fixture
def held_azure(azure, azurite_server, monkeypatch):
    """The proxy in front of Azurite, which the test's runs reach it through, to hold a request back."""
    import azurite
    from faulty_proxy import FaultyProxy

    upstream = azurite_server.split("BlobEndpoint=")[1].split(f"/{azurite.ACCOUNT}")[0]
    proxy = FaultyProxy(upstream)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string(int(proxy.url.rsplit(":", 1)[1])))
    yield proxy
    proxy.close()


def test_a_lapsed_lease_is_taken_over_by_exactly_one_of_two_contenders(azure, held_azure):
    """Both contenders find the lease lapsed; the late one, whose takeover reaches the store after the other's, is
    refused."""
    fs, container = azure
    out = f"az://{container}/out"
    options = {"skip_instance_cache": True}  # a client of its own each, through the proxy
    with two_contenders_for_a_lapsed_lease(out, options, held_azure) as (stale, early, late):
        assert isinstance(late, OutputBusy) and "run early" in str(late)
        stale._holder.release()  # a late release by the old holder, which has not noticed: it must not remove it
        early.check()
        assert json.loads(fs.cat_file(f"{container}/out/_lease.json"))["run_id"] == "early"
        with pytest.raises(LeaseLost):
            stale.check()


def test_a_missing_container_fails_in_seconds_naming_it(azure):
    started = time.monotonic()
    with pytest.raises(storage.StoreError, match="container 'no-such-container' does not exist"):
        storage.check_access("az://no-such-container/out", write=True)
    assert time.monotonic() - started < 10


def test_an_unreachable_account_fails_in_seconds(azure):
    started = time.monotonic()
    with pytest.raises(storage.StoreError, match="cannot reach"):
        storage.check_access(f"az://{azure[1]}/photos", {"connection_string": azure_string(closed_port())})
    assert time.monotonic() - started < 60  # about 15 s here; the SDK's own retries would take 80 s or more


def test_an_output_check_writes_and_removes_a_probe(azure):
    fs, container = azure
    storage.check_access(f"az://{container}/out", write=True)
    assert fs.ls(container) == []


def azure_string(port: int) -> str:
    import azurite

    return azurite.connection_string(port)
