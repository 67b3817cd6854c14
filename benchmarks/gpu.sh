#!/usr/bin/env bash
# The device check, sized to finish within 8 minutes on one H100 or H200, printing everything it measures:
#   1. the GPU-marked model tests, when pytest is there: fast generation compiled on CUDA writes token for token
#      what plain generate writes (fp32), and fp16 agrees with fp32;
#   2. benchmarks/gpu_generate.py: model-only captions per second of the full-size ViT-GPT2 architecture (random
#      weights, built from configs: no download), greedy, 16 new tokens, batches 64 to 1024, fp16 and bf16, fast
#      generation off and on, with the ratio, the share of the FLOP ceiling (--peak-tflops 989), the peak GPU
#      memory per batch size and the fast path's own check against plain generate;
#   3. the same for the Florence-2-base and PaliGemma-2-3B architectures (bf16, batches 16 to 256);
#   4. benchmarks/gpu_extras.py: the share of fp16 and bf16 captions identical to fp32's, and host-to-device
#      transfer of a caption batch from pageable and from pinned memory.
#
# Needs python with torch (CUDA), transformers, numpy, Pillow and pyarrow; not Ray, not the network, no install of
# this repository. To carry it to a GPU machine, copy the working tree and run this from its root:
#     git archive --format=tar.gz -o captioner.tar.gz HEAD        # about 1 MB
#     scp captioner.tar.gz gpu-host: && ssh gpu-host 'mkdir -p captioner && tar -xzf captioner.tar.gz -C captioner'
#     ssh gpu-host 'cd captioner && bash benchmarks/gpu.sh'
# (a session's device tool copies the working tree itself: `bash benchmarks/gpu.sh`). Where pyarrow is missing,
# carry its wheel too and set WHEELS to the folder holding it; it is installed from there, offline.
# Settings from the environment: PYTHON (python3), BUDGET_S (no new ViT-GPT2 cell after this many seconds, 140).
# `bash benchmarks/gpu.sh --cpu-check` runs every step on the CPU with the models shrunk: a check of the script.

set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-140}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false
CACHE="${TMPDIR:-/tmp}/captioner-bench"
if [[ "${1:-}" == "--cpu-check" ]]; then
    VIT=(--device cpu --model demo --batch-sizes 2 --repeats 1)
    OTHER=(--device cpu --small --batch-sizes 2 --repeats 1 --max-new-tokens 4)
    EXTRAS=(--device cpu --model demo --images 4 --batch-size 2)
else
    VIT=()
    OTHER=(--dtypes bf16 --batch-sizes 16 64 256 --budget-s 40)
    EXTRAS=()
fi

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
    timeout 90 "$PYTHON" -m pytest -o addopts="" -p no:cacheprovider -q -rs -m gpu \
        tests/models/test_fast.py tests/models/test_generate.py
    echo "tests exit status $?"
else
    echo "pytest is not installed: skipped"
fi

echo "== ViT-GPT2: model-only captions per second, fast generation off and on"
timeout 210 "$PYTHON" benchmarks/gpu_generate.py --budget-s "$BUDGET_S" --cache "$CACHE" "${VIT[@]}"
echo "benchmark exit status $?"
for model in florence2-base paligemma2; do
    echo "== $model: model-only captions per second"
    timeout 60 "$PYTHON" benchmarks/gpu_generate.py --model "$model" --cache "$CACHE" "${OTHER[@]}"
    echo "benchmark exit status $?"
done

echo "== half precision against fp32; host-to-device transfer"
timeout 45 "$PYTHON" benchmarks/gpu_extras.py --cache "$CACHE" "${EXTRAS[@]}"
echo "benchmark exit status $?"
