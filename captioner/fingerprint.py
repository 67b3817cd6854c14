"""Fingerprints: short hashes of the settings (and the model's content) that shaped a language's captions.

Resume matches committed rows by fingerprint, so a rerun with other settings never mistakes old rows for its own.
"""

import functools
import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

from .config import ModelConfig, RunConfig, VideoConfig


def fingerprints(config: RunConfig) -> dict[str, str]:
    """Per language, a short hash of everything that shapes its captions: the captioner and its generation
    settings, CLIP best-of-N, and the language's producer. Adding a language leaves the others' alone."""
    generation = asdict(config.generation)
    if not config.generation.do_sample:
        del generation["seed"]  # greedy and beam search do not use it
    # The fast path writes token for token what the plain one writes (fp32, tests/models/test_fast.py); in half
    # precision its fused kernels round as another batch size or GPU would, which the fingerprint ignores too.
    del generation["fast"]
    base = {
        "model": model_identity(config.model.name),
        "revision": config.model.revision,
        "generation": generation,
        "clip_model": config.clip_model if config.num_candidates > 1 else None,
        "num_candidates": config.num_candidates,
    }
    # Model settings that shape captions, only where set away from their defaults, so outputs written before a
    # setting existed keep resuming.
    defaults = ModelConfig()
    base.update({key: getattr(config.model, key)
                 for key in ("dtype", "language_prompt", "caption_style", "prompt", "image_size")
                 if getattr(config.model, key) != getattr(defaults, key)})
    if config.video.segment_s != VideoConfig.segment_s:  # a video's segments are what its captions describe
        base["segment_s"] = config.video.segment_s
    translators = dict(config.translate)
    out = {}
    for lang in config.languages:
        producer = {"translate": translators[lang], "from": config.source_language} if lang in translators else "native"
        out[lang] = _digest({**base, "producer": producer})
    return out


def fingerprint(config: RunConfig) -> str:
    """One hash for the whole run, for run records."""
    return _digest(fingerprints(config))


def model_identity(name: str) -> str:
    """How fingerprints name a model: a hub id or object-store URL as given, a local folder by its content, so the
    same model in another checkout, container or Ray working directory keeps resuming the same output."""
    folder = Path(name)
    if "://" in name or not folder.is_dir():
        return name
    files = tuple(sorted(
        (path.relative_to(folder).as_posix(), path.stat().st_size, path.stat().st_mtime_ns)
        for path in folder.rglob("*")
        if path.is_file() and path.suffix != ".md" and not any(part.startswith(".") for part in path.parts)
    ))
    return _folder_digest(str(folder.resolve()), files)


@functools.lru_cache(maxsize=16)
def _folder_digest(folder: str, files: tuple[tuple[str, int, int], ...]) -> str:
    """Digest of the files' names and bytes; cached while their sizes and times stay the same."""
    digest = hashlib.sha256()
    for relative, size, _ in files:
        digest.update(f"{relative}\0{size}\0".encode())
        with open(os.path.join(folder, relative), "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return f"folder:{digest.hexdigest()[:16]}"


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
