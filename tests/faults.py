"""Faults injected into Ray's worker processes through ``worker_process_setup_hook`` (real Ray, no GPU).

CAPTIONER_TEST_FAULTS names a folder shared with the test; each injected failure leaves a file there, and the
mode decides how often the caption actor meets a CUDA-like error: ``once`` in the whole run, or ``always``.
"""

import os
import uuid


def cuda_errors() -> None:
    """Make CaptionActor's model calls fail as a broken CUDA context does."""
    import torch

    from captioner.run import stages

    folder, mode = os.environ["CAPTIONER_TEST_FAULTS"], os.environ["CAPTIONER_TEST_FAULT_MODE"]
    describe = stages.CaptionActor._describe

    def failing(self, batch, rows):
        if mode == "always" or not os.listdir(folder):
            open(os.path.join(folder, uuid.uuid4().hex), "w").close()
            raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")
        return describe(self, batch, rows)

    stages.CaptionActor._describe = failing
