"""Where bytes live: fsspec stores, manifests, the shard writer, an output's committed state and its lease."""
