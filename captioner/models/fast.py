"""Fast greedy captioning: a static KV cache, the decoder step compiled into CUDA graphs, and batches padded to a
few fixed shapes. Token for token what plain ``generate`` writes. No Ray here.

A decoder step at caption batch sizes is bound by kernel launches, not arithmetic. ``torch.compile`` with
``mode="reduce-overhead"`` (transformers compiles the steps after the prefill when the cache is static) fuses the
step's kernels and replays it as one CUDA graph, which reads every tensor at a fixed shape and address: so the keys
and values live in a static cache made once per batch shape and kept on the captioner, and a batch is padded up to
the next power of two, so a run replays a few captured graphs instead of capturing one per batch size. Pad rows
copy the last real row: they end when it ends, generation still stops as soon as every caption has ended, and
their outputs are dropped.

Each batch shape's first batch checks itself: it is captioned on both paths, and a fast path whose tokens differ
from plain ``generate``'s, or that fails or compiles too long, leaves that shape to the plain path for the rest of
the run, with one warning and a line in the run record (``_first``).

Only greedy search comes here (``generate._generate`` decides): beam search reorders the cache rows every step, and
sampling draws each row from its own generator in a Python logits processor; both stay on the plain path. So does
a family whose ``static_cache`` is None. Compiling is for CUDA only: on a CPU it takes minutes and there are no CUDA
graphs, so there ``on`` runs the static cache and padding alone, which is what the CPU tests hold to plain generate.
"""

import logging
import time

import torch
from transformers import CompileConfig

from .family import Encoded
from .family import rows as rows_of
from .loading import Captioner

log = logging.getLogger(__name__)
COMPILE = CompileConfig(mode="reduce-overhead")  # inductor kernels replayed as CUDA graphs
COMPILE_LIMIT_S = 600.0  # a shape's first fast batch (compiling, capturing) that takes longer is taken as failed


def wanted(setting: str, device: torch.device) -> bool:
    """Whether ``GenerationConfig.fast`` asks for the fast path on this device: ``on``, or ``auto`` on CUDA."""
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def bucket(rows: int) -> int:
    """The batch size ``rows`` is padded to: the next power of two, so a power-of-two ``--batch-size`` wastes
    nothing and a run's smaller batches (its last one, a language few images ask for) reuse a few shapes."""
    return 1 << (rows - 1).bit_length()


def generate(captioner: Captioner, encoded: Encoded, prompt: torch.Tensor, compile_config: CompileConfig | None = None,
             **search):
    """``family.generate`` for greedy search on a static cache at a bucketed batch size, or the plain call where the
    family has no static cache or the shape failed its check; the output holds the real rows only.
    ``compile_config`` says how the steps compile: by default into CUDA graphs on CUDA, and not at all on a CPU."""
    if compile_config is None and captioner.device.type == "cuda":
        compile_config = COMPILE
    family, model = captioner.info.family, captioner.model
    key = (bucket(prompt.shape[0]), prompt.shape[1] + search["max_new_tokens"])  # (rows, tokens) of a cache
    if key not in captioner.caches:
        return _first(captioner, key, encoded, prompt, compile_config, search)
    if captioner.caches[key] is None:
        return family.generate(model, encoded, prompt, **search)
    return _on_cache(captioner, captioner.caches[key], encoded, prompt, compile_config, search)


def _first(captioner: Captioner, key: tuple[int, int], encoded: Encoded, prompt: torch.Tensor,
           compile_config: CompileConfig | None, search: dict):
    """A shape's first batch: on the fast path and on the plain one, which it must match token for token. A fast
    path that differs, raises (a compile error) or takes over ``COMPILE_LIMIT_S`` leaves the shape to the plain path,
    with one warning; either way the check is kept in ``captioner.checks`` for the run record."""
    family, model = captioner.info.family, captioner.model
    cache = family.static_cache(model, key[1], encoded)
    if cache is None:
        captioner.caches[key] = None
        log.info("fast generation for batches of %d: plain, the %s family has no static cache", key[0], family.name)
        return family.generate(model, encoded, prompt, **search)
    started = time.perf_counter()
    try:
        ours, failure = _on_cache(captioner, cache, encoded, prompt, compile_config, search), None
    except torch.OutOfMemoryError:
        raise
    except Exception as exc:  # compiling can fail in many ways; the plain path still captions
        ours, failure = None, f"failed: {type(exc).__name__}: {exc}"
    fast_s = time.perf_counter() - started
    plain = family.generate(model, encoded, prompt, **search)
    check_s = time.perf_counter() - started - fast_s
    if failure is None and not torch.equal(ours.sequences, plain.sequences):
        failure = "its tokens differ from plain generate's"
    if failure is None and fast_s > COMPILE_LIMIT_S:
        failure = f"its first batch took {fast_s:.0f} s (compiling), over {COMPILE_LIMIT_S:.0f} s"
    captioner.caches[key] = None if failure else cache
    captioner.checks.append({"batch": key[0], "tokens": key[1], "verdict": failure or "fast",
                             "fast_s": round(fast_s, 3), "check_s": round(check_s, 3)})
    if failure:
        log.warning("fast generation for batches of %d: %s; those batches take the plain path", key[0], failure)
        return plain
    log.info("fast generation for batches of %d, %d tokens: a static cache, checked against plain generate", *key)
    return ours


def _on_cache(captioner: Captioner, cache, encoded: Encoded, prompt: torch.Tensor,
              compile_config: CompileConfig | None, search: dict):
    rows = prompt.shape[0]
    size = bucket(rows)
    cache.reset()
    pad = size - rows
    index = torch.arange(size, device=prompt.device).clamp(max=rows - 1)  # pad rows repeat the last real one
    encoded = rows_of(encoded, index)  # (size, ...)
    prompt = torch.cat([prompt, prompt[-1:].expand(pad, -1)])  # (size, P)
    compiling = {"compile_config": compile_config} if compile_config else {"disable_compile": True}
    out = captioner.info.family.generate(captioner.model, encoded, prompt, cache=cache, **compiling, **search)
    out.sequences = out.sequences[:rows]  # (rows, P + T)
    if out.logits is not None:
        out.logits = tuple(step[:rows] for step in out.logits)  # T x (rows, V)
    return out
