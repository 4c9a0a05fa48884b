#!/usr/bin/env bash
# tbh on an NVIDIA GPU, verified in one short run (< 8 minutes): run it as it is from the repo root,
#     bash bench/gpu_check.sh 2>&1 | tee gpu_check.log
# and keep the log in docs/performance.md with the card's name. It fails when there is no GPU or
# when onnxruntime comes up on CPU instead of CUDA. It installs nothing when tbh already imports
# (.venv/bin/python, or $PYTHON); otherwise it runs `pip install -e .` once.
# It prints: the onnxruntime providers actually used; `tbh index` throughput at 224 px for
# efficientnet-lite0 and resnet50 (random weights: speed does not depend on them) with batch 64
# and 256, decode workers = cores, next to decode-only and inference-only rates of the same run;
# TBH training steps/s at batch 400 on CUDA and CPU; nvJPEG against Pillow decoding; the bit
# mismatch of GPU codes against CPU codes; `tbh index --dask` on a GPU worker (bench/gpu_check.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)
if ! "$PY" -c "import tbhcli, onnxruntime, torch, distributed" 2>/dev/null; then
    echo "== tbh does not import with $PY: pip install -e ."
    "$PY" -m pip install -q -e .
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
N=${GPU_CHECK_IMAGES:-2048}
CORES=$(nproc)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "$CORES cores; $(uname -r)"
"$PY" - <<'PY'
import onnxruntime as ort, torch, torchvision
from tbhcli.deploy.runtime import gpu_count
print(f"onnxruntime {ort.__version__} providers available: {ort.get_available_providers()}")
print(f"torch {torch.__version__} cuda {torch.cuda.is_available()}, torchvision {torchvision.__version__}")
assert gpu_count() > 0, "no CUDA GPU visible to the driver"
assert "CUDAExecutionProvider" in ort.get_available_providers(), "onnxruntime has no CUDA provider"
PY
"$PY" -c "import torch, torchvision; torch.save(torchvision.models.resnet50().state_dict(), '$WORK/resnet50.pt')"

echo "== tbh index at 224 px, $N JPEGs, $CORES decode workers, CUDA (fails if it falls back to CPU)"
for backbone in efficientnet-lite0 resnet50; do
    weights=()
    [ "$backbone" = resnet50 ] && weights=(--backbone-weights "$WORK/resnet50.pt")
    for batch in 64 256; do
        echo "-- $backbone, batch $batch"
        timeout 150 "$PY" bench/index_throughput.py --images "$N" --size 224 --bits 64 \
            --backbone "$backbone" "${weights[@]}" --batch-size "$batch" --workers "$CORES" \
            --device cuda 2>&1 | grep -v "^indexing\|^exported\|onnxruntime = torch\|logit|"
    done
done

echo "== TBH training, batch 400 (CPU, then CUDA)"
timeout 120 "$PY" bench/train_speed.py --dims 1280 4096 --batch 400 --steps 10

echo "== nvJPEG vs Pillow, GPU vs CPU codes, tbh index --dask on a GPU worker"
timeout 180 "$PY" bench/gpu_check.py --images 4096 --size 224 2>&1 \
    | grep -v "^indexing\|^exported\|onnxruntime = torch\|logit|\|^model "
echo "== gpu_check done"
