"""The Parquet schemas of everything captioner writes: the one place column names are spelled.

Output layout under OUTPUT:
  captions/lang=xx/part-*.parquet   one row per (image or video segment, language); ``lang`` is the directory
  errors/part-*.parquet             one row per file (or video segment) that could not be captioned
  _commits/<shard>.json             commit marker of one shard: its files and counts, written last
  _inflight/<run>/<shard>.json      while a write task writes its shard: what a stopping run waits for
  _lease.json                       held by the run writing to OUTPUT; refuses a second writer
  runs/<run_id>/manifest/part-*.parquet  the frozen listing the run worked from, in parts
  runs/<run_id>/todo/part-*.parquet  while the run runs: its plan, one input block per part
  runs/<run_id>/run.json            the run record (counts, timings, settings, status)
"""

import pyarrow as pa

SCHEMA_VERSION = 3  # 2: video segments; 3: detected_lang (older parts read it as null)

# Identity of an input object: a caption is only ever attached to this exact triple.
URI = "uri"
SIZE = "size"
ETAG = "etag"

LANG = "lang"
LANGS = "langs"
CAPTION = "caption"
SCORE = "score"
WIDTH = "width"
HEIGHT = "height"
MODEL = "model"
MODEL_REVISION = "model_revision"
RUN_ID = "run_id"
FINGERPRINT = "fingerprint"
ATTEMPT = "attempt"
ERROR_TYPE = "error_type"
ERROR = "error"
PIXELS = "pixels"
RESULTS = "results"
PRODUCER = "producer"
SOURCE_LANG = "source_lang"
SOURCE_CAPTION = "source_caption"
CLIP_SCORE = "clip_score"
CLIP_PIXELS = "clip_pixels"
NUM_CANDIDATES = "num_candidates"
SEGMENT = "segment"  # a video's segment, from 0; null for still images
START_S = "start_s"
END_S = "end_s"
SEGMENTS = "segments"  # how many segments the whole video has, so resume knows when it is complete
COUNTED = "counted"  # between stages: true on the one row that counts its file (a video's first segment)
OFFSET = "offset"  # tar members: where the member's bytes start in its shard; null for plain files
STORED = "stored"  # planning: a partly captioned video's stored captions, JSON {segment: {lang: caption}}
NATIVE = "native"  # the producer of captions written by the captioner's own language token
DETECTED_LANG = "detected_lang"
DETECTED_LANG_CONFIDENCE = "detected_lang_confidence"

IDENTITY = (URI, SIZE, ETAG)

CAPTIONS_DIR = "captions"
ERRORS_DIR = "errors"
RUNS_DIR = "runs"
COMMITS_DIR = "_commits"
FAST_CHECKS_DIR = "fast-checks"  # runs/<run_id>/fast-checks/: each caption actor's checks of the fast path
TODO_DIR = "todo"  # runs/<run_id>/todo/: a running run's plan, one input block per part
INFLIGHT_DIR = "_inflight"  # _inflight/<run>/<shard>.json while a write task writes that shard
LEASE_FILE = "_lease.json"

# Error types worth another try on the next run without --retry-errors: the store or the worker, not the image,
# failed.
TRANSIENT_ERRORS = frozenset({"read_error", "changed", "caption_error", "decoder_unavailable"})

MANIFEST = pa.schema(
    [
        pa.field(URI, pa.string(), nullable=False),  # full URI; an absolute path for local files
        pa.field(SIZE, pa.int64()),  # bytes, null when a manifest file gave only URIs
        pa.field(ETAG, pa.string()),  # the store's ETag, or "mtime:<seconds>" where it has none
        pa.field(OFFSET, pa.int64()),  # tar members (``<shard uri>#<member>``): the member's bytes start here
        pa.field(ERROR, pa.string()),  # set when listing found the file unreadable (a corrupt tar shard)
    ]
)

# Rows as written to captions/lang=xx/: ``lang`` is added back by hive partitioning on read.
CAPTION_FILE = pa.schema(
    [
        pa.field(URI, pa.string(), nullable=False),
        pa.field(SIZE, pa.int64()),
        pa.field(ETAG, pa.string()),
        pa.field(SEGMENT, pa.int32()),  # videos: which segment, from 0; null for still images
        pa.field(START_S, pa.float32()),  # videos: the segment's start and end, seconds from the video's start
        pa.field(END_S, pa.float32()),
        pa.field(SEGMENTS, pa.int32()),  # videos: how many segments the whole video has
        pa.field(CAPTION, pa.string(), nullable=False),
        pa.field(SCORE, pa.float32(), nullable=False),  # mean token log-probability, <= 0, higher is better
        pa.field(PRODUCER, pa.string(), nullable=False),  # "native", or the translation model's id
        pa.field(SOURCE_LANG, pa.string()),  # translations: the language of the caption row they translate
        pa.field(CLIP_SCORE, pa.float32()),  # 2.5 * max(cos(image, text), 0) under --clip-model, else null
        # The language the caption reads as (ISO 639-1, by captioner.langid); null for an empty caption, one too
        # short to tell, and rows written before identification. Its confidence in [0, 1]; null for no letters.
        pa.field(DETECTED_LANG, pa.string()),
        pa.field(DETECTED_LANG_CONFIDENCE, pa.float32()),
        pa.field(NUM_CANDIDATES, pa.int32(), nullable=False),  # captions generated to choose this one from
        pa.field(WIDTH, pa.int32(), nullable=False),  # original image (or video frame) size, after EXIF orientation
        pa.field(HEIGHT, pa.int32(), nullable=False),
        pa.field(MODEL, pa.string(), nullable=False),
        pa.field(MODEL_REVISION, pa.string()),
        pa.field(RUN_ID, pa.string(), nullable=False),
        pa.field(FINGERPRINT, pa.string(), nullable=False),  # hash of the settings that shaped this language's rows
    ],
    metadata={"captioner.schema_version": str(SCHEMA_VERSION)},
)

# The whole captions dataset as readers see it.
CAPTIONS = CAPTION_FILE.insert(3, pa.field(LANG, pa.string(), nullable=False))

ERROR_FILE = pa.schema(
    [
        pa.field(URI, pa.string(), nullable=False),
        pa.field(SIZE, pa.int64()),
        pa.field(ETAG, pa.string()),
        pa.field(SEGMENT, pa.int32()),  # a video segment that failed while others decoded; null: the whole file
        pa.field(ERROR_TYPE, pa.string(), nullable=False),  # short machine-readable kind, e.g. "not_an_image"
        pa.field(ERROR, pa.string(), nullable=False),  # human-readable message
        pa.field(ATTEMPT, pa.int32(), nullable=False),  # 1 for the first run that failed on it, 2 for the next...
        pa.field(RUN_ID, pa.string(), nullable=False),
    ],
    metadata={"captioner.schema_version": str(SCHEMA_VERSION)},
)

# What a caption actor hands the writer: one row per image, its captions in a list, so a shard never
# splits an image's languages. ``error_type`` set means the image failed and ``results`` is empty. The detected
# language is left null by the actor and filled by the write stage, off the GPU's process.
CAPTION_RESULT = pa.struct(
    [(name, CAPTION_FILE.field(name).type)
     for name in (CAPTION, SCORE, PRODUCER, SOURCE_LANG, CLIP_SCORE, DETECTED_LANG, DETECTED_LANG_CONFIDENCE,
                  NUM_CANDIDATES, FINGERPRINT)]
    + [(LANG, pa.string())]
)
IMAGE_RESULT = pa.schema(
    [
        *[f.with_nullable(True) for f in CAPTION_FILE if f.name not in CAPTION_RESULT.names],
        pa.field(RESULTS, pa.list_(CAPTION_RESULT)),
        pa.field(COUNTED, pa.bool_()),
        ERROR_FILE.field(ERROR_TYPE).with_nullable(True),
        ERROR_FILE.field(ERROR).with_nullable(True),
        ERROR_FILE.field(ATTEMPT).with_nullable(True),
    ]
)
