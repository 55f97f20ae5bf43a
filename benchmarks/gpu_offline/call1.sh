#!/bin/bash
# Device call 1: keep part A of the model outside the repo, install the small wheels, and run
# the tiny bench on the GPU's bf16 paths (toy env, tiny random model).
set -u
mkdir -p /root/g && cp .gpu_a/smollm.a /root/g/ &
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /root/site .gpu_a/*.whl
wait
export PYTHONPATH=/root/site:$PWD/src WANDB_MODE=disabled PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc; python3 -c "import torch,transformers,lightning,peft,tokenizers;print(torch.__version__,transformers.__version__,lightning.__version__,peft.__version__,tokenizers.__version__,torch.cuda.is_available())"
T=$(date +%s)
timeout 100 python3 -m ipr_lightning.bench.cli --config benchmarks/gpu_offline/tiny_bench.yaml bench.out_dir=/tmp/smoke model.dtype=auto trainer.precision=auto model.cache_dir=/tmp/smokecache > /tmp/smoke.log 2>&1
echo "smoke rc=$? in $(( $(date +%s) - T )) s"; grep -v Warning /tmp/smoke.log | tail -25
ls -la /root/g  # part A, for call2.sh
