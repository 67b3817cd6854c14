"""Option types and the storage options every command shares."""

import argparse

from ..config import RETRY_MODES, StorageConfig


def csv(value: str) -> tuple[str, ...]:
    """A comma-separated option as a tuple, blanks dropped."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


def add_storage_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """How to reach object stores; returned so a command can add its own storage-related options."""
    s = parser.add_argument_group("storage (credentials: AWS environment variables or profiles)")
    s.add_argument("--endpoint-url", help="S3-compatible endpoint, e.g. http://127.0.0.1:9000 for MinIO")
    s.add_argument("--anon", action="store_true", help="unsigned S3 requests, for public buckets")
    s.add_argument("--profile", help="AWS profile name from ~/.aws/config")
    s.add_argument("--store-max-attempts", type=int, default=StorageConfig.max_attempts,
                   help="tries per S3 request when the store throttles (503 SlowDown), resets or times out, "
                   "with jittered exponential backoff (default: %(default)s)")
    s.add_argument("--store-retry-mode", choices=RETRY_MODES, default=StorageConfig.retry_mode,
                   help="botocore retry mode; adaptive also slows this client down while throttled "
                   "(default: %(default)s)")
    return s


def storage_config(args: argparse.Namespace) -> StorageConfig:
    """The parsed storage options as the frozen config the library takes."""
    return StorageConfig(endpoint_url=args.endpoint_url, anon=args.anon, profile=args.profile,
                         max_attempts=args.store_max_attempts, retry_mode=args.store_retry_mode)
