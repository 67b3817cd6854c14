"""Streaming, parallel listing of a folder or prefix: pages of (uri, size, version tag) as they arrive.

Folders are listed concurrently: each lister lists one folder (page by page) and hands the subfolders it finds
to the pool, so a bucket with many prefixes is listed by many requests at once, and nothing but the current
pages is held in memory. A flat prefix of millions of keys is still one sequential listing (S3 pages cannot be
split without knowing the keys).
"""

import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import fsspec
from s3fs import S3FileSystem

from . import fs as storage

log = logging.getLogger(__name__)

LISTERS = 16  # folders listed at once
PAGE = 10_000  # rows per page handed on from a local folder
Row = tuple[str, int, str | None]  # uri, size, version tag
# One folder's listing, page by page: (files, subfolders) of each page.
Lister = Callable[[str], Iterator[tuple[list[Row], list[str]]]]
_DONE = object()


def pages(url: str, options: dict | None = None, wanted: Callable[[str], bool] = lambda uri: True,
          listers: int = LISTERS) -> Iterator[list[Row]]:
    """Pages of every file under ``url`` whose URI passes ``wanted``, recursively, in no particular order."""
    fs, root = storage.filesystem(url, options)
    if not fs.exists(root):
        raise FileNotFoundError(f"input {url!r} does not exist; check the path, bucket name and credentials")
    if fs.isfile(root):
        uri = storage.full_uri(fs, root)
        if wanted(uri):
            info = fs.info(root)
            yield [(uri, int(info.get("size") or 0), storage.version_tag(info))]
        return
    if isinstance(fs, S3FileSystem):
        lister = _s3_lister(fs)
    elif storage.is_local(fs):
        lister = _local_folder
    else:
        lister = _generic_lister(fs)
    for page in _fan_out(lister, root, listers):
        page = [row for row in page if wanted(row[0])]
        if page:
            yield page


def _fan_out(lister: Lister, root: str, listers: int) -> Iterator[list[Row]]:
    """Run ``lister`` over ``root`` and every subfolder it reports, ``listers`` at a time; pages come out through a
    bounded queue, so listers wait while the consumer writes. Closing the iterator stops the listers."""
    out: queue.Queue = queue.Queue(maxsize=4 * listers)
    stop = threading.Event()
    lock = threading.Lock()
    open_folders = [1]

    def put(item) -> None:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def task(folder: str) -> None:
        try:
            for files, folders in lister(folder):
                with lock:
                    open_folders[0] += len(folders)
                for sub in folders:
                    pool.submit(task, sub)
                if files:
                    put(files)
        except BaseException as exc:  # handed to the consumer, which raises it
            put(exc)
        finally:
            with lock:
                open_folders[0] -= 1
                last = open_folders[0] == 0
            if last:
                put(_DONE)

    pool = ThreadPoolExecutor(listers, thread_name_prefix="lister")
    try:
        pool.submit(task, root)
        while (item := out.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)


def _local_folder(folder: str) -> Iterator[tuple[list[Row], list[str]]]:
    """One local folder via ``os.scandir``: files with their size and mtime tag (as ``fs.version_tag`` writes it);
    links to files are followed, links to folders are not (no cycles)."""
    files: list[Row] = []
    folders: list[str] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                folders.append(entry.path)
            elif entry.is_file():
                stat = entry.stat()
                files.append((entry.path, stat.st_size, f"mtime:{stat.st_mtime:.6f}"))
                if len(files) >= PAGE:
                    yield files, []
                    files = []
    yield files, folders


def _s3_lister(fs: S3FileSystem) -> Lister:
    """``ListObjectsV2`` with a delimiter, page by page, straight from the store (no listing cache in memory)."""
    def lister(folder: str) -> Iterator[tuple[list[Row], list[str]]]:
        bucket, _, prefix = folder.partition("/")
        if prefix and not prefix.endswith("/"):  # the root; the store's own prefixes are kept exactly ("a//")
            prefix += "/"
        base = fs.unstrip_protocol(bucket)
        request = {"Bucket": bucket, "Prefix": prefix, "Delimiter": "/"}
        while True:
            reply = fs.call_s3("list_objects_v2", **request)
            files = [(f"{base}/{o['Key']}", int(o["Size"]), o["ETag"].strip('"'))
                     for o in reply.get("Contents", ()) if not o["Key"].endswith("/")]
            folders = [f"{bucket}/{p['Prefix']}" for p in reply.get("CommonPrefixes", ())]
            yield files, folders
            if not reply.get("IsTruncated"):
                return
            request["ContinuationToken"] = reply["NextContinuationToken"]
    return lister


def _generic_lister(fs: fsspec.AbstractFileSystem) -> Lister:
    """Any other fsspec store: ``ls`` with details, one folder at a time, its cache dropped after each."""
    def lister(folder: str) -> Iterator[tuple[list[Row], list[str]]]:
        entries = fs.ls(folder, detail=True)
        fs.invalidate_cache(folder)
        files = [(storage.full_uri(fs, e["name"]), int(e.get("size") or 0), storage.version_tag(e))
                 for e in entries if e["type"] != "directory"]
        yield files, [e["name"] for e in entries if e["type"] == "directory"]
    return lister
