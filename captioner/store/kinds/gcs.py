"""Google Cloud Storage (``gs://``, through gcsfs): an input store for now. Credentials come from Google's standard
chain as gcsfs reads it (Application Default Credentials, ``GOOGLE_APPLICATION_CREDENTIALS``, the metadata server
of GKE's Workload Identity; ``STORAGE_EMULATOR_HOST`` for an emulator).

An output is refused: GCS gives what the one-writer lease needs (``ifGenerationMatch=0`` to create, the generation
to renew), but no GCS server from the package registries honours those preconditions to test the lease against
(gcp-storage-emulator ignores them), and an untested lease is no lease.
"""

import fsspec

from .base import Holder, Kind, StoreError


class Gcs(Kind):
    name = "Google Cloud Storage"
    protocols = ("gs", "gcs")

    def lease(self, fs: fsspec.AbstractFileSystem, path: str, record: dict) -> Holder:
        raise StoreError("captioner reads gs:// input but does not write its output to Google Cloud Storage yet "
                         "(its one-writer lease is not yet tested there); write the output to a local folder, S3 "
                         "or Azure Blob Storage")
