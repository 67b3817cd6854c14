"""Option types, and the storage and generation options the commands share."""

import argparse

from ..config import CAPTION_STYLES, FAST_GENERATION, MAX_NEW_TOKENS, RETRY_MODES, GenerationConfig, StorageConfig


def csv(value: str) -> tuple[str, ...]:
    """A comma-separated option as a tuple, blanks dropped."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


def add_storage_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """How to reach object stores; returned so a command can add its own storage-related options."""
    s = parser.add_argument_group("storage (credentials: AWS environment variables or profiles)")
    s.add_argument("--endpoint-url", help="S3-compatible endpoint, e.g. http://127.0.0.1:9000 for MinIO")
    s.add_argument("--anon", action="store_true", help="anonymous requests, for public buckets (S3, GCS, Azure)")
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


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    """How captions are searched for."""
    g = parser.add_argument_group("generation")
    g.add_argument("--max-new-tokens", type=int,
                   help="longest caption, in tokens (default by --caption-style: "
                   + ", ".join(f"{n} {style}" for style, n in MAX_NEW_TOKENS.items()) + ")")
    g.add_argument("--num-beams", type=int, default=GenerationConfig.num_beams,
                   help="beam search width; 1 is greedy decoding (default: %(default)s)")
    g.add_argument("--temperature", type=float, help="sample with this temperature instead of greedy/beam search")
    g.add_argument("--top-p", type=float, help="sample from the smallest token set with this probability mass")
    g.add_argument("--seed", type=int, default=GenerationConfig.seed,
                   help="seed for sampling; the same seed gives the same captions (default: %(default)s)")
    g.add_argument("--fast-generation", choices=FAST_GENERATION, default=GenerationConfig.fast,
                   help="greedy captions on a static KV cache with the decoder step compiled into CUDA graphs, "
                   "batches padded to the next power of two (so a power-of-two --batch-size wastes nothing); "
                   "the same tokens as without: each batch shape's first batch is checked against plain "
                   "generate, and a shape that differs or fails to compile takes the plain path. auto: on CUDA GPUs; "
                   "on: also on CPU, without compiling; beam search, sampling and families without a static cache "
                   "take the plain path (default: %(default)s)")


def generation_config(args: argparse.Namespace) -> GenerationConfig:
    """The parsed generation options as the frozen config the library takes."""
    style = getattr(args, "caption_style", CAPTION_STYLES[0])
    return GenerationConfig(max_new_tokens=args.max_new_tokens or MAX_NEW_TOKENS[style], num_beams=args.num_beams,
                            temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                            fast=args.fast_generation)
