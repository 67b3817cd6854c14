"""Fast greedy captioning: a static KV cache, the decoder step compiled into CUDA graphs, and batches padded to a
few fixed shapes. Token for token what plain ``generate`` writes. No Ray here.

A decoder step at caption batch sizes is bound by kernel launches, not arithmetic. ``torch.compile`` with
``mode="reduce-overhead"`` (transformers compiles the steps after the prefill when the cache is static) fuses the
step's kernels and replays it as one CUDA graph, which reads every tensor at a fixed shape and address: so the keys
and values live in a static cache made once per batch shape and kept on the captioner, and a batch is padded up to
the next power of two, so a run replays a few captured graphs instead of capturing one per batch size. Pad rows
copy the last real row: they end when it ends, generation still stops as soon as every caption has ended, and
their outputs are dropped.

Only greedy search comes here (``generate._generate`` decides): beam search reorders the cache rows every step, and
sampling draws each row from its own generator in a Python logits processor; both stay on the plain path. So does
a family whose ``static_cache`` is None. Compiling is for CUDA only: on a CPU it takes minutes and there are no CUDA
graphs, so there ``on`` runs the static cache and padding alone, which is what the CPU tests hold to plain generate.
"""

import logging

import torch
from transformers import CompileConfig

from .family import Encoded
from .family import rows as rows_of
from .loading import Captioner

log = logging.getLogger(__name__)
COMPILE = CompileConfig(mode="reduce-overhead")  # inductor kernels replayed as CUDA graphs


def wanted(setting: str, device: torch.device) -> bool:
    """Whether ``GenerationConfig.fast`` asks for the fast path on this device: ``on``, or ``auto`` on CUDA."""
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def bucket(rows: int) -> int:
    """The batch size ``rows`` is padded to: the next power of two, so a power-of-two ``--batch-size`` wastes
    nothing and a run's smaller batches (its last one, a language few images ask for) reuse a few shapes."""
    return 1 << (rows - 1).bit_length()


def generate(captioner: Captioner, encoded: Encoded, prompt: torch.Tensor, **search):
    """``family.generate`` for greedy search on a static cache at a bucketed batch size, or the plain call where the
    family has no static cache; the output holds the real rows only."""
    family, model = captioner.info.family, captioner.model
    rows, length = prompt.shape[0], prompt.shape[1] + search["max_new_tokens"]
    size = bucket(rows)
    key = (size, length)
    if key not in captioner.caches:
        captioner.caches[key] = family.static_cache(model, length, encoded)
        log.info("fast generation for batches of %d, %d tokens: %s", size, length, "a static cache"
                 if captioner.caches[key] is not None else f"plain, the {family.name} family has no static cache")
    cache = captioner.caches[key]
    if cache is None:
        return family.generate(model, encoded, prompt, **search)
    cache.reset()
    pad = size - rows
    index = torch.arange(size, device=prompt.device).clamp(max=rows - 1)  # pad rows repeat the last real one
    encoded = rows_of(encoded, index)  # (size, ...)
    prompt = torch.cat([prompt, prompt[-1:].expand(pad, -1)])  # (size, P)
    compiling = {"compile_config": COMPILE} if captioner.device.type == "cuda" else {"disable_compile": True}
    out = family.generate(model, encoded, prompt, cache=cache, **compiling, **search)
    out.sequences = out.sequences[:rows]  # (rows, P + T)
    if out.logits is not None:
        out.logits = tuple(step[:rows] for step in out.logits)  # T x (rows, V)
    return out
