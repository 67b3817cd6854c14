#!/usr/bin/env bash
# Issue 20's device check, sized to finish within 8 minutes on one H100 or H200, printing everything it measures:
#   1. the GPU-marked model tests, when pytest is there: fast generation compiled on CUDA writes token for token
#      what plain generate writes (fp32), and fp16 agrees with fp32 on CPU;
#   2. benchmarks/gpu_generate.py: model-only captions per second of the full-size ViT-GPT2 architecture (random
#      weights, built from configs: no download), greedy, 16 new tokens, batches 64 to 1024, fp16 and bf16, fast
#      generation off and on, with the ratio and the share of the FLOP ceiling (--peak-tflops 989).
#
# Needs python with torch (CUDA), transformers, numpy, Pillow and pyarrow; not Ray, not the network, no install of
# this repository. To carry it to a GPU machine, copy the working tree and run this from its root:
#     git archive --format=tar.gz -o captioner.tar.gz HEAD        # about 1 MB
#     scp captioner.tar.gz gpu-host: && ssh gpu-host 'mkdir -p captioner && tar -xzf captioner.tar.gz -C captioner'
#     ssh gpu-host 'cd captioner && bash benchmarks/gpu.sh'
# (a session's device tool copies the working tree itself: `bash benchmarks/gpu.sh`). Where pyarrow is missing,
# carry its wheel too and set WHEELS to the folder holding it; it is installed from there, offline.
# Settings from the environment: PYTHON (python3), BUDGET_S (no new benchmark cell after this many seconds, 240);
# arguments go to gpu_generate.py (a CPU smoke test here: `bash benchmarks/gpu.sh --model demo`).

set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-240}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false

echo "== machine"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PYTHON" -c 'import sys, torch, transformers; print("python", sys.version.split()[0], "| torch", torch.__version__,
"| CUDA", torch.version.cuda, "available" if torch.cuda.is_available() else "NOT AVAILABLE",
"| transformers", transformers.__version__)' || exit 1

missing() {  # the modules beyond torch and transformers that are not installed
    "$PYTHON" -c 'import importlib.util as u; print(*(m for m in ("numpy", "PIL", "pyarrow") if not u.find_spec(m)))'
}
if [[ -n "$(missing)" && -n "${WHEELS:-}" ]]; then
    "$PYTHON" -m pip install --quiet --no-index --find-links "$WHEELS" $(missing | sed 's/PIL/pillow/')
fi
if [[ -n "$(missing)" ]]; then
    echo "missing Python modules: $(missing) (carry their wheels and set WHEELS, see the header)"; exit 1
fi

echo "== GPU tests (fast generation compiled on CUDA; fp16 against fp32)"
if "$PYTHON" -c 'import pytest' 2>/dev/null; then
    # addopts cleared: the project's --timeout needs pytest-timeout, which a bare image lacks
    timeout 110 "$PYTHON" -m pytest -o addopts="" -p no:cacheprovider -q -rs -m gpu \
        tests/models/test_fast.py tests/models/test_generate.py
    echo "tests exit status $?"
else
    echo "pytest is not installed: skipped"
fi

echo "== model-only captions per second, fast generation off and on"
timeout 350 "$PYTHON" benchmarks/gpu_generate.py --budget-s "$BUDGET_S" --cache "${TMPDIR:-/tmp}/captioner-bench" "$@"
echo "benchmark exit status $?"
