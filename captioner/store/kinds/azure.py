"""Azure Blob Storage and ADLS Gen2 (``az://`` and ``abfs://``, through adlfs and Azure's own SDK).

The lease blob is created with ``If-None-Match: *`` (``overwrite=False``), renewed with ``If-Match`` on its ETag,
released by a delete with ``If-Match``, which Azure honours; its age is the store's own clock (the reply's Date
against the blob's Last-Modified). Credentials come from Azure's standard chain as adlfs reads it
(``AZURE_STORAGE_CONNECTION_STRING``; account name with key or SAS token; ``DefaultAzureCredential``: managed or
workload identity), never from captioner's options, so none reaches a log, a record or a message. This module is
imported only for such URLs, so adlfs and the SDK are needed only by those who use them (``captioner[azure]``).
"""

import json
import logging
import posixpath
import uuid
from email.utils import parsedate_to_datetime

import fsspec
from azure.core import MatchConditions
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from fsspec.asyn import sync

from .base import ConditionalLease, Holder, Kind, StoreError, parse

log = logging.getLogger(__name__)

CHECK_RETRIES = 1  # retries per request of the access check, so an unreachable account fails in seconds
CHECK_TIMEOUT_S = 5.0


class Azure(Kind):
    name = "Azure Blob Storage"
    protocols = ("az", "abfs", "abfss")

    def lease(self, fs: fsspec.AbstractFileSystem, path: str, record: dict) -> Holder:
        return _Lease(fs, path, record)

    def check_access(self, url: str, options: dict, write: bool) -> None:
        """List the container (Storage Blob Data Reader); for an output, also create and delete a probe blob
        (Storage Blob Data Contributor), each with few retries, so a missing container or role fails in seconds."""
        fs, path = fsspec.core.url_to_fs(url, **options)
        container, _, prefix = path.partition("/")
        account = getattr(fs, "account_name", None) or "the storage account"
        client = fs.service_client.get_container_client(container)
        quick = {"retry_total": CHECK_RETRIES, "connection_timeout": CHECK_TIMEOUT_S}

        async def run() -> None:
            await client.get_container_properties(**quick)
            async for _ in client.list_blobs(name_starts_with=prefix or None, results_per_page=1, **quick):
                break
            if write:
                blob = client.get_blob_client(posixpath.join(prefix, f"_captioner-probe-{uuid.uuid4().hex}"))
                await blob.upload_blob(b"", overwrite=False, **quick)
                await blob.delete_blob(**quick)

        try:
            sync(fs.loop, run)
        except ResourceNotFoundError as exc:
            raise StoreError(f"container {container!r} does not exist in {account} ({exc.error_code})") from None
        except ClientAuthenticationError as exc:
            raise StoreError(f"no credentials for container {container!r} in {account}: set "
                             "AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_ACCOUNT_NAME with "
                             "AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN, or give the node an identity "
                             f"({exc.error_code})") from None
        except HttpResponseError as exc:
            if exc.status_code == 403:
                role = "Storage Blob Data Contributor" if write else "Storage Blob Data Reader"
                raise StoreError(f"no permission on container {container!r} in {account}: the identity needs the "
                                 f"{role} role ({exc.error_code})") from None
            raise StoreError(f"{account} refused container {container!r}: {exc.status_code} {exc.error_code}") from None
        except Exception as exc:
            raise StoreError(f"cannot reach {account} for container {container!r}: {type(exc).__name__}: {exc}. "
                             "Check the account's endpoint and the network") from None


class _Lease(ConditionalLease):
    """The lease blob, written only conditionally."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, record: dict) -> None:
        super().__init__(record)
        container, blob = path.split("/", 1)
        self.fs = fs
        self.blob = fs.service_client.get_blob_client(container, blob)

    def _put(self, record: dict, **condition) -> str:
        return sync(self.fs.loop, self.blob.upload_blob, json.dumps(record).encode(), **condition)["etag"]

    def _create(self) -> str | None:
        try:
            return self._put(self.record, overwrite=False)
        except ResourceExistsError:
            return None

    def _replace(self, record: dict, etag: str) -> str | None:
        try:
            return self._put(record, overwrite=True, etag=etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return None

    def _read(self) -> tuple[dict | None, str | None, float]:
        headers: dict = {}
        try:
            props = sync(self.fs.loop, self.blob.get_blob_properties,
                         raw_response_hook=lambda response: headers.update(response.http_response.headers))
            body = sync(self.fs.loop, self._body)
        except ResourceNotFoundError:
            return None, None, 0.0
        date = headers.get("Date") or headers.get("date")
        age = (parsedate_to_datetime(date) - props.last_modified).total_seconds() if date else 0.0
        return parse(body), props.etag, age

    async def _body(self) -> bytes:
        return await (await self.blob.download_blob()).readall()

    def release(self) -> None:
        try:
            sync(self.fs.loop, self.blob.delete_blob, etag=self.etag, match_condition=MatchConditions.IfNotModified)
        except ResourceNotFoundError:
            pass
        except ResourceModifiedError:
            log.warning("the output lease had passed to another run before this one released it")
