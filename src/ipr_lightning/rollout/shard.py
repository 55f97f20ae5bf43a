"""This process's share of the episodes when several processes (ranks) run them together:
under Lightning DDP/FSDP, every rank explores, scores and evaluates a disjoint share and all
ranks then see the union. Variable-length records travel through the rollout store's files
and `gather` (pickled objects), never through same-shape tensor collectives.

    shard = Shard.of_trainer(trainer)        # or Shard() in one process
    mine = [s for s in specs if shard.owns(s.key)]
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def _alone(obj: Any) -> list[Any]:
    return [obj]


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1
    barrier: Callable[[], None] | None = None
    """Waits for every rank (None: one process)."""
    gather: Callable[[Any], list[Any]] = _alone
    """Every rank's object, by rank, on every rank."""

    def owns(self, key: Any) -> bool:
        """Whether this rank runs the episode keyed `key` (a JSON-able key): a hash of the
        key, so the split does not depend on the order or number of the specs."""
        return self.world == 1 or zlib.crc32(json.dumps(key).encode()) % self.world == self.rank

    def agree(self, value: Any) -> Any:
        """Rank 0's `value`, on every rank (one decision for all, e.g. "is this done?")."""
        return self.gather(value)[0] if self.world > 1 else value

    @classmethod
    def of_trainer(cls, trainer: Any) -> Shard:
        """The share of this process in a Lightning trainer's world."""
        world = trainer.world_size
        if world == 1:
            return cls()

        def gather(obj: Any) -> list[Any]:
            import torch.distributed as dist

            out: list[Any] = [None] * world
            dist.all_gather_object(out, obj)
            return out

        return cls(trainer.global_rank, world, trainer.strategy.barrier, gather)
