"""Reference log-probs of preference pairs, computed once before training.

DPO's reference terms never change during a phase, so computing them once per pair (instead
of in every training step) saves a forward per step. They are computed with the training
forward itself — the same rendering, truncation, packing (`SharedPrefixCollator`) and
precision — so they equal what an on-the-fly reference would give.

    values = reference_logps(module, dataset, batch_size, collator)
    pairs = with_reference(pairs, dataset, values)   # stored in the pairs file
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ipr_lightning.data.datasets import PairDataset
from ipr_lightning.data.records import PreferencePair
from ipr_lightning.rollout.shard import Shard


def reference_logps(
    module: Any,
    data: PairDataset,
    batch_size: int,
    collate: Callable[[list], dict[str, Any]],
    precision: AbstractContextManager | None = None,
    progress: bool = False,
    shard: Shard | None = None,
) -> list[tuple[float, float]]:
    """(chosen, rejected) token-summed log-probs under `module`'s DPO reference for every
    served row of `data`, in order. `precision`: the trainer's autocast context, if any.
    With a `shard` of several ranks each computes every world-th batch (the batches one
    process would make, so the same numbers) and all ranks get all values."""
    shard = shard or Shard()
    starts = range(0, len(data), batch_size)
    batches = [list(range(i, min(i + batch_size, len(data)))) for i in starts]
    own = list(range(len(batches)))[shard.rank :: shard.world]
    loader = DataLoader(data, batch_sampler=[batches[b] for b in own], collate_fn=collate)
    mine: dict[int, list[tuple[float, float]]] = {}
    with torch.no_grad(), module.reference() as model, precision or nullcontext():
        served = tqdm(loader, desc="reference log-probs", disable=not progress, leave=False)
        for b, batch in zip(own, served, strict=True):
            batch = {k: v.to(module.device) for k, v in batch.items()}
            logps, _ = module.sequence_logps(batch, model)
            chosen, rejected = logps.float().chunk(2)
            mine[b] = list(zip(chosen.tolist(), rejected.tolist(), strict=True))
    if shard.world > 1:
        mine = {b: values for share in shard.gather(mine) for b, values in share.items()}
    return [value for b in sorted(mine) for value in mine[b]]


def with_reference(
    pairs: Sequence[PreferencePair], data: PairDataset, values: list[tuple[float, float]]
) -> list[PreferencePair]:
    """The pairs with their reference log-probs set (pairs not served keep None), and the
    same values set on `data`'s rows."""
    out = list(pairs)
    for row, i, (c, r) in zip(data.rows, data.sources, values, strict=True):
        out[i] = replace(out[i], ref_chosen_logp=c, ref_rejected_logp=r)
        row.ref_chosen_logp, row.ref_rejected_logp = c, r
    return out
