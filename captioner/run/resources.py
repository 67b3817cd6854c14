"""Resource planning: fill unset per-stage resources from the cluster, size input blocks, and refuse up front
what no node can host."""

import math
from dataclasses import replace

from ..config import ConfigError, ResourceConfig

MAX_BLOCK_ROWS = 4096  # URIs per input block


def resolve(res: ResourceConfig, cluster_cpus: float, cluster_gpus: float) -> ResourceConfig:
    """Fill unset fields: one actor per GPU, else CPU actors that leave cores for decoding."""
    res.validate(cluster_cpus, cluster_gpus)
    gpus = res.num_gpus if res.num_gpus is not None else (1.0 if cluster_gpus >= 1 else 0.0)
    if gpus > 0:
        cpus = res.num_cpus if res.num_cpus is not None else 1.0
        concurrency = max(1, int(cluster_gpus // gpus))
        batch = 64
    else:
        cpus = res.num_cpus if res.num_cpus is not None else float(min(4, max(1, int(cluster_cpus // 2))))
        concurrency = max(1, int((cluster_cpus // 2) // cpus))
        batch = 32  # ViT-GPT2 on 2 cores: 2.3, 2.9, 3.7, 3.8 images/s at 8, 16, 32, 64 (benchmarks/bench.py)
    concurrency = res.concurrency if res.concurrency is not None else concurrency
    threads = max(1, int(cpus))
    if not gpus:
        # Captioning on CPU costs tens of times what decoding does, and decode tasks wait on backpressure most
        # of the time, so the actors' threads share every core (Ray still counts num_cpus, which leaves decode
        # tasks room to run). A thread per held CPU left half of a 2-core machine idle (benchmarks/bench.py).
        threads = max(threads, int(cluster_cpus // (res.max_concurrency or concurrency)))
    return replace(
        res,
        concurrency=concurrency,
        batch_size=res.batch_size if res.batch_size is not None else batch,
        num_gpus=gpus,
        num_cpus=cpus,
        num_threads=res.num_threads if res.num_threads is not None else threads,
    )


def actor_args(res: ResourceConfig) -> dict[str, float]:
    """Ray's resource arguments for a caption actor. A GPU actor's one CPU is Ray Data's own default: naming
    it as well draws Ray's "experimental" warning on every GPU run, so only a CPU count the user chose is named."""
    if res.num_gpus and res.num_cpus == 1.0:
        return {"num_gpus": res.num_gpus}
    return {"num_cpus": res.num_cpus, "num_gpus": res.num_gpus}


def block_rows(res: ResourceConfig, images: int, cluster_cpus: float) -> int:
    """URIs per input block: enough blocks to keep every CPU decoding, few enough that millions of URIs stay
    cheap to schedule, and a whole number of caption batches each.

    Ray Data hands an actor the rows of whole blocks and cuts its batches within them, so a 24-row block
    made a batch of 32 and one of 16 out of every two blocks: the small batch ran at 78% of the big one's rate.
    """
    rows = max(res.decode_batch_size, min(MAX_BLOCK_ROWS, math.ceil(images / (4 * max(cluster_cpus, 1.0)))))
    batch = res.batch_size or 1
    return math.ceil(rows / batch) * batch


def check_fits(res: ResourceConfig, nodes: list[dict[str, float]]) -> None:
    """Refuse up front a caption actor or decode task that no node of the cluster can host (resources of one
    actor must be on one node), rather than let the job wait for resources that never come."""
    actor = {"GPU": res.num_gpus or 0.0, "CPU": res.num_cpus or 0.0}
    decode = {"CPU": 1.0, "memory": res.decode_memory_mb * 2**20}
    for what, need, flags in (("caption actor", actor, "--num-gpus/--num-cpus"),
                              ("decode task", decode, "--decode-memory-mb")):
        if not any(all(node.get(k, 0.0) >= v for k, v in need.items()) for node in nodes):
            largest = ", ".join(f"{n.get('CPU', 0):g} CPU {n.get('GPU', 0):g} GPU "
                                f"{n.get('memory', 0) / 2**30:.1f} GiB" for n in nodes) or "none"
            wants = ", ".join(f"{v / 2**20:g} MiB memory" if k == "memory" else f"{v:g} {k}"
                              for k, v in need.items())
            raise ConfigError(
                f"no node of the cluster can host a {what} ({wants}); its nodes have: {largest}. Lower {flags}, "
                "or add such nodes (an autoscaling GPU group must start with at least one node)"
            )
    cpus = sum(node.get("CPU", 0.0) for node in nodes)
    taken = (res.concurrency or 1) * (res.num_cpus or 0.0)
    if cpus - taken < decode["CPU"]:
        raise ConfigError(
            f"{res.concurrency or 1} caption actor(s) x {res.num_cpus or 0:g} CPU take {taken:g} of the "
            f"cluster's {cpus:g} CPUs and leave none for a decode task (1 CPU), so the run would wait for ever. "
            "Lower --concurrency or --num-cpus"
        )
