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


def reference_logps(
    module: Any,
    data: PairDataset,
    batch_size: int,
    collate: Callable[[list], dict[str, Any]],
    precision: AbstractContextManager | None = None,
    progress: bool = False,
) -> list[tuple[float, float]]:
    """(chosen, rejected) token-summed log-probs under `module`'s DPO reference for every
    served row of `data`, in order. `precision`: the trainer's autocast context, if any."""
    loader = DataLoader(data, batch_size=batch_size, collate_fn=collate)
    out: list[tuple[float, float]] = []
    with torch.no_grad(), module.reference() as model, precision or nullcontext():
        for batch in tqdm(loader, desc="reference log-probs", disable=not progress, leave=False):
            batch = {k: v.to(module.device) for k, v in batch.items()}
            logps, _ = module.sequence_logps(batch, model)
            chosen, rejected = logps.float().chunk(2)
            out += zip(chosen.tolist(), rejected.tolist(), strict=True)
    return out


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
