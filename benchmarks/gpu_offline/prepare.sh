#!/bin/bash
# Prepare the carry folders for configs/bench_alfworld_gpu.yaml on an offline GPU machine that
# has Python 3.12 with torch, transformers, lightning, peft and tokenizers but no package
# registry (this project's lent H200). Run here, from anywhere in the repository:
#
#   PY312=/path/to/python3.12 bash benchmarks/gpu_offline/prepare.sh      # about 15 min
#
# It writes two folders that .gitignore names, each under the 64 MiB a device call carries:
#   .gpu_a/  part A of the SmolLM2 GGUF (62 MB), the omegaconf wheels;
#   .gpu_b/  part B of the GGUF, the ALFWorld stack's wheels built for Python 3.12, and the
#            generated games with their expert trajectories (made under /tmp/iprcache, which
#            stays: a later run reuses what its keys match).
# Then make the two device calls back to back (the machine stays warm only ~30 s):
#   run(command="bash benchmarks/gpu_offline/call1.sh", carry=[".gpu_a"], timeout_s=200)
#   run(command="bash benchmarks/gpu_offline/call2.sh", carry=[".gpu_b"], timeout_s=<left - 60>)
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
PY312=${PY312:-python3.12}
PY=${PY:-python}
A=.gpu_a B=.gpu_b W=$(mktemp -d)
rm -rf $A $B && mkdir -p $A $B  # both in .gitignore
$PY312 -m pip wheel --no-deps -q -w $W alfworld==0.4.2 textworld==1.7.0 fast-downward-textworld \
  jericho tatsu==5.8.3 hashids mementos termcolor prompt_toolkit wcwidth more_itertools \
  omegaconf antlr4-python3-runtime==4.9.3 gguf
mv $W/omegaconf-*.whl $W/antlr4_python3_runtime-*.whl $A/ && mv $W/*.whl $B/
G=$($PY -c "from ipr_lightning.models import find_smollm2_gguf; print(find_smollm2_gguf())")
head -c 62000000 "$G" > $A/smollm.a
tail -c +62000001 "$G" > $B/smollm.b
sha256sum "$G" | cut -d' ' -f1 > $B/smollm.sha256
XDG_CACHE_HOME=/tmp/iprcache $PY benchmarks/gpu_offline/prep_games.py configs/bench_alfworld_gpu.yaml
tar -C /tmp -cJf $B/iprcache.tar.xz iprcache
du -sh $A $B
