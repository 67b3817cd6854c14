"""Every kind of store captioner knows, picked from a filesystem's fsspec protocol; a kind's module (and its client
library) is imported only when a URL of that kind is used. Store kinds without a module here (http, memory...) can
be read; an output on one is refused, as it gives no conditional writes."""

import importlib

import fsspec

from .base import Kind

# fsspec protocol -> the module that knows that kind, and its class
MODULES = {"file": ("local", "Local"), "local": ("local", "Local"), "s3": ("s3", "S3"), "s3a": ("s3", "S3"),
           "az": ("azure", "Azure"), "abfs": ("azure", "Azure"), "abfss": ("azure", "Azure"),
           "gs": ("gcs", "Gcs"), "gcs": ("gcs", "Gcs")}
# URL schemes whose fsspec backend is an optional extra: scheme -> (package, extra)
BACKENDS = {"gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs"), "az": ("adlfs", "azure"), "abfs": ("adlfs", "azure"),
            "abfss": ("adlfs", "azure")}


class _Other(Kind):
    """A store without conditional writes: readable, never an output."""

    def __init__(self, protocol: str) -> None:
        self.name = f"{protocol}://"
        self.protocols = (protocol,)


def kind_of(fs: fsspec.AbstractFileSystem) -> Kind:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    found = next((MODULES[p] for p in protocols if p in MODULES), None)
    if found is None:
        return _Other(protocols[0])
    module, name = found
    return getattr(importlib.import_module(f".{module}", __name__), name)()
