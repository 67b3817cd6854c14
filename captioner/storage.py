"""One path type for every store: fsspec URLs, with listing and atomic writes on top."""

import io
import posixpath
import urllib.parse
import uuid
from collections.abc import Iterator

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem


def filesystem(url: str, options: dict | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for ``url`` and the path inside it (local paths become absolute)."""
    return fsspec.core.url_to_fs(url, **(options or {}))


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


def walk_files(url: str, options: dict | None = None) -> Iterator[tuple[str, int, str | None]]:
    """(uri, size, version tag) of every file under ``url``, recursively, in sorted order."""
    fs, root = filesystem(url, options)
    if not fs.exists(root):
        raise FileNotFoundError(f"input {url!r} does not exist; check the path, bucket name and credentials")
    if fs.isfile(root):
        found = {root: fs.info(root)}
    else:
        found = fs.find(root, detail=True, withdirs=False)
    for path in sorted(found):
        info = found[path]
        yield full_uri(fs, path), int(info.get("size") or 0), version_tag(info)


def identity(uri: str, options: dict | None = None) -> tuple[int, str | None]:
    """(size, version tag) of one object, for inputs whose manifest named only the URI."""
    fs, path = filesystem(uri, options)
    info = fs.info(path)
    return int(info.get("size") or 0), version_tag(info)


def redact(uri: str) -> str:
    """``uri`` without user info or query string, so tokens and presigned signatures never reach logs or records."""
    parts = urllib.parse.urlsplit(uri)
    if not parts.scheme or not (parts.query or "@" in parts.netloc):
        return uri
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def join(base: str, *parts: str) -> str:
    return posixpath.join(base.rstrip("/"), *parts)


def read_bytes(uri: str, options: dict | None = None) -> bytes:
    fs, path = filesystem(uri, options)
    return fs.cat_file(path)


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
