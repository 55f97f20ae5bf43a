"""Generate a bench config's ALFWorld games and play the expert on its splits, into
$XDG_CACHE_HOME (used by prepare.sh; the expert cache's key holds the data root's absolute
path, so the cache must be unpacked at the same path where it is used)."""

import sys
import time

from ipr_lightning.bench.plan import cell_config, load_bench
from ipr_lightning.envs.registry import build_env

config = sys.argv[1]
bench, raw = load_bench(config)
cfg = cell_config(bench, raw, config, bench.seeds[0], "ipr")
start = time.time()
for split in (cfg.env.train_split, *bench.splits):
    n = len(build_env(cfg.env, split).expert())
    print(f"{split}: {n} expert trajectories ({time.time() - start:.0f} s)", flush=True)
