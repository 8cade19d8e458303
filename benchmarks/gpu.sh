#!/usr/bin/env bash
# GPU check, on a CUDA machine with nothing but PyTorch (+ torchvision, pyyaml, tqdm,
# safetensors, tensorboard, matplotlib) and this repo. Prepared to finish within 8 minutes on
# one GPU (each part has its own time limit; a part that runs out says so and the rest go on):
#  1. the ViT-S/16 iBOT step at 224 px, bf16, batch 64 (the earlier run's setting), eager:
#     none / random / block / high / high@rollout, with FLOPs, TFLOP/s, MFU, host syncs;
#  2. the same at batch 128 per GPU;
#  3. batch 128 with run.compile=inductor (none and high: compiling takes a minute or two);
#  4. a short pretrain + k-NN of the README's main config on the embedded data set.
# Usage: bash benchmarks/gpu.sh [OUTPUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp/mimkit_gpu}}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, torch.cuda.get_device_name(0))" | tee "$out/device.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$out/device.txt" || true

vit_s=(--device cuda --arch vit_small --img-size 224 --patch-size 16 --local-crops 6
  --local-crop-size 96 --amp bf16 --out-dim 8192 --mask-prob 1.0)
part() {  # part NAME SECONDS COMMAND...: run with a time limit, keep the output, time it
  local name=$1 limit=$2 t0
  shift 2
  t0=$(date +%s)
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.md"
  [ "${PIPESTATUS[0]}" = 124 ] && echo "($name: stopped at its ${limit} s limit)" | tee -a "$out/$name.md"
  echo "$name: $(($(date +%s) - t0)) s" | tee -a "$out/times.txt"
}

part step_b64 80 python3 benchmarks/bench_step.py "${vit_s[@]}" --batch-size 64 \
  --steps 10 --warmup 3 --rounds 2 --strategies none random block high high@rollout
part step_b128 90 python3 benchmarks/bench_step.py "${vit_s[@]}" --batch-size 128 \
  --steps 8 --warmup 3 --rounds 2 --strategies none random block high high@rollout
part step_b128_compiled 180 python3 benchmarks/bench_step.py "${vit_s[@]}" --batch-size 128 \
  --compile inductor --steps 8 --warmup 3 --rounds 2 --strategies none high

rm -rf "$out/pretrain"
part pretrain 110 python3 -m mimkit pretrain --device cuda --workers 8 \
  --output-dir "$out/pretrain" --set run.progress=false
python3 - "$out" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
log = out / "pretrain/log.jsonl"
epochs = [json.loads(l) for l in log.read_text().splitlines()] if log.exists() else []
epochs = [e for e in epochs if e["kind"] == "epoch"]
if epochs:
    print("\n| pretrain (embedded, fashion_mnist_vit_mini) | value |\n|---|---:|")
    print(f"| epochs | {len(epochs)} |")
    mid = sorted(epochs, key=lambda e: e["images_per_s"])[len(epochs) // 2]
    print(f"| images/s (median epoch) | {mid['images_per_s']:.0f} |")
    print(f"| data wait (median epoch) | {mid.get('data_wait', float('nan')):.3f} |")
    print(f"| final loss | {epochs[-1]['loss']:.3f} |")
knn = out / "pretrain/knn_final.json"
if knn.exists():
    k = json.loads(knn.read_text())
    print(f"| k-NN top-1 (k={k.get('k'):g}) | {k['top1']:.2f} |")
PY
cat "$out/times.txt"
