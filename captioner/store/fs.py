"""One path type for every store: fsspec URLs, with listing and atomic writes on top."""

import io
import posixpath
import uuid

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from .kinds import BACKENDS, kind_of
from .kinds.base import StoreError, redact  # noqa: F401 (the rest of captioner says storage.StoreError, .redact)


def filesystem(url: str, options: dict | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for ``url`` and the path inside it (local paths become absolute); a URL whose optional
    backend is not installed gets one line saying what to install."""
    try:
        return fsspec.core.url_to_fs(url, **(options or {}))
    except ImportError as exc:
        scheme = url.split("://", 1)[0].lower()
        if scheme not in BACKENDS:
            raise
        package, extra = BACKENDS[scheme]
        raise StoreError(f"{scheme}:// URLs need {package}, which is not installed: pip install "
                         f"'captioner[{extra}]' (or pip install {package})") from exc


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def full_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The URI users see: an absolute path for local files, ``proto://...`` otherwise."""
    return path if is_local(fs) else fs.unstrip_protocol(path)


def version_tag(info: dict) -> str | None:
    """The object's ETag where the store has one, else its modification time, so changes are seen."""
    for key in ("ETag", "etag", "e_tag"):
        if info.get(key):
            return str(info[key]).strip('"')
    for key in ("mtime", "LastModified", "last_modified", "updated"):
        value = info.get(key)
        if value is not None:
            stamp = value.timestamp() if hasattr(value, "timestamp") else float(value)
            return f"mtime:{stamp:.6f}"
    return None


def identity(uri: str, options: dict | None = None) -> tuple[int, str | None]:
    """(size, version tag) of one object, for inputs whose manifest named only the URI."""
    fs, path = filesystem(uri, options)
    info = fs.info(path)
    return int(info.get("size") or 0), version_tag(info)


def check_access(url: str, options: dict | None = None, write: bool = False) -> None:
    """Fail fast, before any work or write, when a store is unreachable, its bucket or container missing or a
    permission absent; the store kind says how (``kinds/``), in its own terms."""
    fs, _ = filesystem(url, options)
    kind_of(fs).check_access(url, options or {}, write)


def join(base: str, *parts: str) -> str:
    return posixpath.join(base.rstrip("/"), *parts)


def read_bytes(uri: str, options: dict | None = None, limit: int | None = None) -> bytes:
    """The object's bytes, or only its first ``limit`` (one ranged request), so a huge object is never pulled whole."""
    fs, path = filesystem(uri, options)
    return fs.cat_file(path) if limit is None else fs.cat_file(path, start=0, end=limit)


def remove(uri: str, options: dict | None = None) -> None:
    """Delete one file; one already gone is no error."""
    fs, path = filesystem(uri, options)
    try:
        fs.rm_file(path)
    except FileNotFoundError:
        pass


def remove_tree(uri: str, options: dict | None = None) -> None:
    """Delete a folder and everything under it; one already gone is no error."""
    fs, path = filesystem(uri, options)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def write_bytes_atomic(uri: str, data: bytes, options: dict | None = None) -> None:
    """Readers see the whole file or nothing: a local temp file renamed into place, or one object PUT."""
    fs, path = filesystem(uri, options)
    if is_local(fs):
        parent = posixpath.dirname(path)
        fs.makedirs(parent, exist_ok=True)
        tmp = posixpath.join(parent, f".tmp-{uuid.uuid4().hex}-{posixpath.basename(path)}")
        with fs.open(tmp, "wb") as f:
            f.write(data)
        fs.mv(tmp, path)
    else:
        fs.pipe_file(path, data)


def write_parquet_atomic(uri: str, table: pa.Table, options: dict | None = None) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    write_bytes_atomic(uri, buf.getvalue(), options)
