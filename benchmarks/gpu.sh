#!/usr/bin/env bash
# GPU check, on a CUDA machine with nothing but PyTorch (+ torchvision, pyyaml, tqdm,
# safetensors, tensorboard, matplotlib) and this repo: runs in a few minutes and prints
#  1. a ViT-S/16 iBOT step benchmark at 224 px, bf16: images/s for random, block, high,
#     the thesis's per-crop high@raw:11 high@raw:4, and high@rollout;
#  2. a short pretrain + k-NN of the README's main config on the embedded data set.
# Usage: bash benchmarks/gpu.sh [OUTPUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp/mimkit_gpu}}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, torch.cuda.get_device_name(0))" | tee "$out/device.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$out/device.txt" || true

start=$(date +%s)
python3 benchmarks/bench_step.py --device cuda --arch vit_small --img-size 224 \
  --patch-size 16 --batch-size 64 --local-crops 6 --local-crop-size 96 --amp bf16 \
  --out-dim 8192 --steps 10 --warmup 3 --rounds 2 \
  --strategies random block high "high@raw:11" "high@rollout" 2>&1 | tee "$out/step_bench.md"
t1=$(date +%s)

rm -rf "$out/pretrain"
python3 -m mimkit pretrain --device cuda --workers 8 --output-dir "$out/pretrain" \
  --set run.progress=false 2>&1 | tee "$out/pretrain.log"
t2=$(date +%s)
python3 - "$out" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
epochs = [json.loads(l) for l in (out / "pretrain/log.jsonl").read_text().splitlines()
          if json.loads(l)["kind"] == "epoch"]
knn = json.loads((out / "pretrain/knn_final.json").read_text())
print("\n| pretrain (embedded, fashion_mnist_vit_mini) | value |\n|---|---:|")
print(f"| epochs | {len(epochs)} |")
print(f"| images/s (median epoch) | {sorted(e['images_per_s'] for e in epochs)[len(epochs)//2]:.0f} |")
print(f"| final loss | {epochs[-1]['loss']:.3f} |")
print(f"| k-NN top-1 (k={knn.get('k')}) | {knn['top1']:.2f} |")
PY
echo "step benchmark: $((t1 - start)) s, pretrain + k-NN: $((t2 - t1)) s"
