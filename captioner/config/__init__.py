"""Frozen settings, one dataclass per concern, validated before any work starts."""

from dataclasses import dataclass, field

# The model settings and errors live in their own modules; every wing imports them from here.
from .errors import ConfigError, UserError
from .model import (
    CAPTION_STYLES,
    DEMO_MODEL,
    DTYPES,
    FAST_GENERATION,
    LANGUAGE_PROMPTS,
    MAX_NEW_TOKENS,
    GenerationConfig,
    ModelConfig,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
DEFAULT_EXTENSIONS = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
MODES = ("resume", "append", "overwrite")
RETRY_MODES = ("standard", "adaptive")  # botocore's retry modes: both back off with jitter; adaptive also paces
# Pillow formats decoded in this process, by Pillow's own code and libraries; --image-formats picks among them.
# Never EPS (it runs Ghostscript) or any other format whose plugin calls out to a program.
DECODABLE_FORMATS = ("AVIF", "BMP", "GIF", "ICO", "JPEG", "JPEG2000", "PNG", "PPM", "QOI", "TGA", "TIFF", "WEBP")
DEFAULT_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


@dataclass(frozen=True)
class StorageConfig:
    """How to reach object stores; credentials come from each platform's own chain (AWS environment and profiles,
    Azure's and Google's), never from here."""

    endpoint_url: str | None = None  # S3-compatible endpoint (MinIO, Ceph, a local server)
    anon: bool = False  # unsigned requests, for public buckets (S3, GCS, Azure)
    profile: str | None = None  # named AWS profile from ~/.aws/config
    max_attempts: int = 8  # tries per S3 request (throttling, resets, timeouts), with jittered exponential backoff
    retry_mode: str = "standard"  # botocore retry mode: standard, or adaptive (also slows down when throttled)
    connect_timeout_s: float = 10.0  # per connection attempt, so an unreachable store fails in seconds
    read_timeout_s: float = 60.0  # per socket read, so a stalled transfer is retried instead of waited on

    def options(self, url: str) -> dict:
        """fsspec storage options for ``url``; only S3 URLs take S3 settings, and --anon applies to every cloud."""
        if url.startswith(("gs://", "gcs://")):
            return {"token": "anon"} if self.anon else {}
        if url.startswith(("az://", "abfs://", "abfss://")):
            return {"anon": True} if self.anon else {}
        if not url.startswith(("s3://", "s3a://")):
            return {}
        opts: dict = {"config_kwargs": {
            "retries": {"total_max_attempts": self.max_attempts, "mode": self.retry_mode},
            "connect_timeout": self.connect_timeout_s,
            "read_timeout": self.read_timeout_s,
        }}
        if self.endpoint_url:
            opts["endpoint_url"] = self.endpoint_url
        if self.anon:
            opts["anon"] = True
        if self.profile:
            opts["profile"] = self.profile
        return opts

    def validate(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"--store-max-attempts must be at least 1, got {self.max_attempts}")
        if self.retry_mode not in RETRY_MODES:
            raise ConfigError(f"--store-retry-mode must be one of {', '.join(RETRY_MODES)}, got {self.retry_mode!r}")
        if self.connect_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise ConfigError("store timeouts must be more than 0 seconds")
        if self.endpoint_url and "@" in self.endpoint_url.split("//", 1)[-1].split("/", 1)[0]:
            raise ConfigError("--endpoint-url must not carry credentials (user:password@host); give them through "
                              "the AWS environment variables or --profile")


@dataclass(frozen=True)
class InputConfig:
    uri: str  # folder, bucket prefix, or a .parquet/.csv/.txt manifest of URIs
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS  # listed files must end with one of these


@dataclass(frozen=True)
class DecodeConfig:
    """What an input file may cost before it is recorded as failed instead of decoded."""

    formats: tuple[str, ...] = DEFAULT_FORMATS  # Pillow formats tried; anything else is unsupported_format/not_an_image
    max_pixels: int = 100_000_000  # width x height from the header; more is a decompression bomb
    max_file_mb: int = 128  # bigger objects are never read
    timeout_s: float = 30.0  # per image decode, in a child process that is killed when it overruns
    memory_mb: int = 2048  # address space one image's decode may add in that child

    def validate(self) -> None:
        refused = [f for f in self.formats if f not in DECODABLE_FORMATS]
        if refused or not self.formats:
            raise ConfigError(f"--image-formats: {', '.join(refused) or 'none given'} cannot be chosen; pick from "
                              f"{', '.join(DECODABLE_FORMATS)} (formats whose decoders run other programs, such as "
                              "EPS, never are)")
        for name, flag in (("max_pixels", "--max-image-pixels"), ("max_file_mb", "--max-image-mb"),
                           ("memory_mb", "--decode-memory-cap-mb")):
            if getattr(self, name) < 1:
                raise ConfigError(f"{flag} must be at least 1, got {getattr(self, name)}")
        if self.timeout_s <= 0:
            raise ConfigError(f"--decode-timeout-s must be more than 0, got {self.timeout_s}")


@dataclass(frozen=True)
class VideoConfig:
    """How videos become segments to caption."""

    segment_s: float = 10.0  # seconds per segment; each segment gets one caption per language
    max_video_s: float = 4 * 3600.0  # longer videos are one error row (too_long), never decoded
    extensions: tuple[str, ...] = VIDEO_EXTENSIONS  # files read as videos; every other file is an image

    def validate(self) -> None:
        if self.segment_s <= 0 or self.max_video_s <= 0:
            raise ConfigError("--segment-s and --max-video-s must be more than 0 seconds")


@dataclass(frozen=True)
class ResourceConfig:
    """Per-stage resources; ``None`` means derive from the cluster (``run.resources.resolve``)."""

    concurrency: int | None = None  # caption actors (the least, when max_concurrency is set)
    max_concurrency: int | None = None  # the most caption actors; Ray Data adds actors up to it as work waits
    batch_size: int | None = None  # images per caption call
    num_gpus: float | None = None  # GPUs per caption actor
    num_cpus: float | None = None  # CPUs per caption actor
    num_threads: int | None = None  # torch threads per caption actor on CPU (default: its share of all cores)
    decode_batch_size: int = 16  # images per read+decode task batch
    decode_memory_mb: int = 512  # memory reserved per decode task; a 12 MP image decodes to ~36 MB per copy
    rows_per_file: int = 1024  # images per output shard

    def validate(self, cluster_cpus: float, cluster_gpus: float) -> None:
        if self.num_gpus and self.num_gpus > cluster_gpus:
            raise ConfigError(
                f"each caption actor asks for {self.num_gpus} GPU(s) but the cluster has {cluster_gpus:g}; "
                "pass --num-gpus 0 to caption on CPU"
            )
        if self.num_cpus and self.num_cpus > cluster_cpus:
            raise ConfigError(
                f"each caption actor asks for {self.num_cpus:g} CPUs but the cluster has {cluster_cpus:g}; lower --num-cpus"
            )
        for name in ("concurrency", "batch_size", "num_threads", "decode_batch_size", "decode_memory_mb",
                     "rows_per_file"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.max_concurrency is not None and (self.concurrency is None or self.max_concurrency < self.concurrency):
            raise ConfigError(f"--concurrency MIN:MAX needs 1 <= MIN <= MAX, got {self.concurrency}:{self.max_concurrency}")


@dataclass(frozen=True)
class RunConfig:
    input: InputConfig
    output: str  # folder or bucket prefix that receives captions/, errors/ and runs/
    model: ModelConfig = field(default_factory=ModelConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    languages: tuple[str, ...] = ("en",)  # one caption row per image per language
    translate: tuple[tuple[str, str], ...] = ()  # (language, translation model): these are translated, not native
    source_language: str = "en"  # what translations translate from; written natively by the captioner
    clip_model: str | None = None  # CLIP model for the clip_score column (and best-of-N)
    num_candidates: int = 1  # captions generated per image and language; the best CLIP score is kept
    resources: ResourceConfig = field(default_factory=ResourceConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    mode: str = "resume"  # output holding other settings' captions: resume refuses, append adds, overwrite replaces
    retry_errors: bool = False  # try images that failed for good (undecodable...) again
    max_error_rate: float | None = None  # fail the run when more than this share of its images fail

    def validate(self) -> None:
        self.model.validate()
        self.generation.validate()
        self.storage.validate()
        self.decode.validate()
        self.video.validate()
        if self.mode not in MODES:
            raise ConfigError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.max_error_rate is not None and not 0 <= self.max_error_rate <= 1:
            raise ConfigError(f"--max-error-rate is a share between 0 and 1, got {self.max_error_rate}")
        if not self.languages:
            raise ConfigError("--languages needs at least one language code, e.g. --languages en")
        for lang in self.languages:
            if not lang.replace("_", "").replace("-", "").isalnum():
                raise ConfigError(f"invalid language code {lang!r}; use codes such as en, fr, de, es")
        if len(set(self.languages)) != len(self.languages):
            raise ConfigError(f"--languages lists a language twice: {','.join(self.languages)}")
        if self.num_candidates < 1:
            raise ConfigError(f"--num-candidates must be at least 1, got {self.num_candidates}")
        if self.num_candidates > 1 and not self.clip_model:
            raise ConfigError("--num-candidates keeps the candidate with the best CLIP score: pass --clip-model too")
        if self.generation.do_sample and 1 < self.generation.num_beams < self.num_candidates:
            raise ConfigError("sampled beam search returns at most --num-beams candidates: raise --num-beams to "
                              "--num-candidates, or use --num-beams 1")
        self.resources.validate(float("inf"), float("inf"))
        extra = sorted(set(dict(self.translate)) - set(self.languages))
        if extra:
            raise ConfigError(f"--translate names {', '.join(extra)}, which --languages does not list")
