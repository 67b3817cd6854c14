"""WebDataset tar shards as input: every image member of a shard is one input file.

A member's identity is (shard URI, member name, shard ETag): its URI is ``<shard uri>#<member name>``, its etag
the shard's, and its manifest row carries ``offset``, where the member's bytes start in the shard, so readers
fetch a member by range instead of unpacking the tar again. Only uncompressed tars qualify: offsets into a
compressed stream could not be read by range.
"""

import logging
import tarfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import IO, Self

from .. import schema
from .fs import filesystem, redact

log = logging.getLogger(__name__)

SEPARATOR = "#"
SUFFIX = ".tar"
# fsspec reads this much per request, so walking a shard's headers or reading its members one after another
# costs one request per block, not one per member.
BLOCK_SIZE = 8 * 2**20
# tarfile's own read size over that buffered file; small, since it copies its buffer on every header read.
STREAM_BUFSIZE = 64 * 2**10
# Shards a ShardReader keeps open at once (each holds up to one block): bounds memory when a task's rows span
# many shards; files are opened again on demand.
MAX_OPEN = 4


def is_shard(uri: str) -> bool:
    """A tar file to expand into its members (not a member of one)."""
    lowered = uri.lower()
    return lowered.endswith(SUFFIX) and SUFFIX + SEPARATOR not in lowered


def split(uri: str) -> tuple[str, str]:
    """(shard uri, member name) of a member URI; the first ".tar#" ends the shard, so member names may hold "#"."""
    cut = uri.lower().find(SUFFIX + SEPARATOR)
    if cut < 0:
        raise ValueError(f"{uri!r} is not a tar member URI (<shard>.tar{SEPARATOR}<member>)")
    return uri[: cut + len(SUFFIX)], uri[cut + len(SUFFIX) + len(SEPARATOR):]


class _Header(tarfile.TarInfo):
    """Remembers why reading a header failed: tarfile ends iteration quietly on a bad header mid-archive,
    exactly as at a proper end, and only the reason tells damage from the end-of-archive marker."""

    @classmethod
    def fromtarfile(cls, tar: "_Tar") -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tar)
        except tarfile.HeaderError as exc:
            tar.stop = exc
            raise


class _Tar(tarfile.TarFile):
    """A streaming TarFile that keeps the reason its last header read failed."""

    tarinfo = _Header
    stop: tarfile.HeaderError | None = None  # why the last header could not be read


def _row(uri: str, size: int | None, etag: str | None, offset: int | None, error: str | None) -> dict:
    return {schema.URI: uri, schema.SIZE: size, schema.ETAG: etag, schema.OFFSET: offset, schema.ERROR: error}


def _damage(tar: _Tar | None, intact: int, shard_size: int | None, raised: Exception | None) -> str | None:
    """What is wrong with a shard whose reading stopped, or None when it stopped at its end-of-archive marker."""
    if tar is None:
        return f"not a tar file: {raised}"
    where = tar.offset
    if shard_size is not None and where + tarfile.BLOCKSIZE > shard_size:
        return (f"truncated tar after {intact} members: the file ends at byte {shard_size}, "
                f"before the header or end-of-archive marker due at byte {where}")
    if raised is None and isinstance(tar.stop, tarfile.EOFHeaderError):
        if not _data_follows(tar):
            return None
        return (f"corrupt tar after {intact} members: a zero block at byte {where} ends the archive, "
                "yet data follows it")
    return f"corrupt tar after {intact} members: bad header at byte {where}: {raised or tar.stop}"


def _data_follows(tar: _Tar) -> bool:
    """Whether anything but zero padding follows the end-of-archive marker: a zeroed header mid-shard looks like
    the end, and would hide every member after it."""
    while chunk := tar.fileobj.read(STREAM_BUFSIZE):
        if chunk.strip(b"\0"):
            return True
    return False


def members(shard_uri: str, etag: str | None, extensions: tuple[str, ...],
            options: dict | None = None) -> Iterator[dict]:
    """Manifest rows of the shard's members whose names end with one of ``extensions`` (case-insensitive), in
    tar order, from one streaming pass over the shard (only headers are kept, never member bytes).

    A damaged shard (corrupt, truncated, not a tar, empty) never raises: its intact members come first, then one
    row for the shard itself whose error says what is wrong, so nothing is silently lost. The store's own errors
    (a missing shard, no permission, the network) do raise: they say nothing about the shard's content.
    """
    fs, path = filesystem(shard_uri, options)
    wanted = tuple(ext.lower() for ext in extensions)
    intact, tar, raised = 0, None, None
    with fs.open(path, "rb", block_size=BLOCK_SIZE, cache_type="readahead") as f:
        shard_size = getattr(f, "size", None)
        try:
            tar = _Tar.open(fileobj=f, mode="r|", bufsize=STREAM_BUFSIZE)
            while (info := tar.next()) is not None:
                tar.members.clear()  # nothing looks back, so a shard of many members keeps no list of them
                if shard_size is not None and info.offset_data + info.size > shard_size:
                    continue  # cut short by truncation; the next header read reports it
                intact += 1
                if info.isreg() and not info.issparse() and info.name.lower().endswith(wanted):
                    yield _row(shard_uri + SEPARATOR + info.name, info.size, etag, info.offset_data, None)
        except tarfile.TarError as exc:
            raised = exc
        problem = _damage(tar, intact, shard_size, raised)
    if problem:
        log.warning("tar shard %s: %s", redact(shard_uri), problem)
        yield _row(shard_uri, shard_size, etag, None, problem)


class ShardReader:
    """Reads member bytes by (uri, offset, size), keeping one open file per shard, so consecutive members of a
    shard come from one sequential stream (fsspec readahead) rather than one request each."""

    def __init__(self, options_for: Callable[[str], dict | None]) -> None:
        self._options_for = options_for
        self._files: OrderedDict[str, IO[bytes]] = OrderedDict()  # shard uri -> open file, least recent first

    def _file(self, shard: str) -> IO[bytes]:
        f = self._files.get(shard)
        if f is not None:
            self._files.move_to_end(shard)
            return f
        fs, path = filesystem(shard, self._options_for(shard))
        f = fs.open(path, "rb", block_size=BLOCK_SIZE, cache_type="readahead")
        self._files[shard] = f
        while len(self._files) > MAX_OPEN:
            self._files.popitem(last=False)[1].close()
        return f

    def read(self, uri: str, offset: int, size: int) -> bytes:
        """The member's bytes; ValueError when fewer than ``size`` are there (the shard changed since listing)."""
        f = self._file(split(uri)[0])
        f.seek(offset)
        data = f.read(size)
        if len(data) != size:
            raise ValueError(f"{redact(uri)}: expected {size} bytes at offset {offset}, got {len(data)}; "
                             "the shard changed since it was listed")
        return data

    def close(self) -> None:
        while self._files:
            self._files.popitem()[1].close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
