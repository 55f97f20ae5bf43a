"""One rank of a sharded IPR iteration on the toy env (run by test_sharded_explore.py):

    python sharded_explore_worker.py OUT_DIR RANK WORLD PORT

Joins a gloo process group of WORLD processes, explores, scores and pairs iteration 1 with
its `Shard` of the episodes into OUT_DIR/r.jsonl (rank r > 0: r.rank<r>.jsonl), and writes
the pairs it built to OUT_DIR/pairs.rank<RANK>.json."""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

import torch.distributed as dist
from toy_policies import TossPolicy

from ipr_lightning.config import EnvConfig
from ipr_lightning.data.io import write_pairs
from ipr_lightning.envs import build_env
from ipr_lightning.ipr.experts import expert_tasks
from ipr_lightning.ipr.explore import Exploration, ExploreSettings
from ipr_lightning.ipr.store import RolloutStore
from ipr_lightning.rollout.shard import Shard

N_TRAIN = 6
SETTINGS = ExploreSettings(mc_samples=3, seed=7)


def explore(out: Path, rank: int = 0, world: int = 1) -> list:
    handle = build_env(EnvConfig(max_turns=12, options={"n_train": N_TRAIN}), "train")
    tasks = expert_tasks(handle, handle.expert())
    barrier = dist.barrier if world > 1 else None
    store = RolloutStore(out / "r.jsonl", rank)
    ex = Exploration(handle, tasks, store, SETTINGS, False, Shard(rank, world, barrier))
    return ex.iteration(1, TossPolicy(), TossPolicy()).pairs


if __name__ == "__main__":
    out, rank, world, port = Path(sys.argv[1]), *map(int, sys.argv[2:])
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(minutes=2))
    try:
        write_pairs(out / f"pairs.rank{rank}.json", explore(out, rank, world))
    finally:
        dist.destroy_process_group()
