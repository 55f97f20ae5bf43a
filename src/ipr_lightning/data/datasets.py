"""Map-style datasets over rendered conversations and pairs, with truncation counts.

Rendering happens once, up front (tokenising a few thousand trajectories takes seconds), so
the counts of truncated rows are known before training starts and can be reported.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from ipr_lightning.data.records import PreferencePair, Trajectory
from ipr_lightning.data.render import Rendered, pad_batch, render_conversation

log = logging.getLogger(__name__)


@dataclass
class RenderStats:
    rows: int = 0
    truncated: int = 0
    """Rows longer than max_length, cut on the right."""
    untrained: int = 0
    """Rows left with no trained token after truncation (they add nothing to the loss)."""
    trained_tokens: int = 0

    def add(self, r: Rendered) -> None:
        self.rows += 1
        self.truncated += r.truncated
        self.untrained += r.num_trained == 0
        self.trained_tokens += r.num_trained

    def report(self, what: str, max_length: int) -> None:
        if self.truncated:
            log.warning(
                "%s: %d of %d rows exceed max_length=%d and were truncated "
                "(%d left with nothing to train on)",
                what,
                self.truncated,
                self.rows,
                max_length,
                self.untrained,
            )


class SFTDataset(Dataset):
    """Expert trajectories rendered with assistant-only labels."""

    def __init__(
        self,
        trajectories: Sequence[Trajectory],
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
    ) -> None:
        self.stats = RenderStats()
        self.rows = []
        for t in trajectories:
            r = render_conversation(tokenizer, t.turns, max_length)
            self.stats.add(r)
            if r.num_trained:  # counted and reported above; an all-masked row has no loss
                self.rows.append(r)
        self.stats.report("SFT data", max_length)
        if self.stats.untrained:
            log.warning(
                "SFT data: skipped %d rows with no assistant token within max_length",
                self.stats.untrained,
            )

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Rendered:
        return self.rows[i]


@dataclass
class RenderedPair:
    chosen: Rendered
    rejected: Rendered
    is_step: bool
    ref_chosen_logp: float | None
    ref_rejected_logp: float | None


class PairDataset(Dataset):
    """Preference pairs: prompt + chosen and prompt + rejected, only completions trained."""

    def __init__(
        self, pairs: Sequence[PreferencePair], tokenizer: PreTrainedTokenizerBase, max_length: int
    ) -> None:
        self.stats = RenderStats()
        self.rows = []
        for p in pairs:
            start = len(p.prompt)
            chosen = render_conversation(tokenizer, p.prompt + p.chosen, max_length, start)
            rejected = render_conversation(tokenizer, p.prompt + p.rejected, max_length, start)
            self.stats.add(chosen)
            self.stats.add(rejected)
            self.rows.append(
                RenderedPair(chosen, rejected, p.is_step, p.ref_chosen_logp, p.ref_rejected_logp)
            )
        self.stats.report("preference pairs", max_length)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> RenderedPair:
        return self.rows[i]


class SFTCollator:
    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: list[Rendered]) -> dict[str, torch.Tensor]:
        return pad_batch(rows, self.pad_id)


class PairCollator:
    """Chosen rows then rejected rows in one padded block, so one forward covers both.

    Keys: input_ids/attention_mask/labels [2B, T] (first B chosen), is_step [B], and
    ref_chosen_logps/ref_rejected_logps [B] when every pair in the batch has them.
    """

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: list[RenderedPair]) -> dict[str, Any]:
        batch: dict[str, Any] = pad_batch(
            [r.chosen for r in rows] + [r.rejected for r in rows], self.pad_id
        )
        batch["is_step"] = torch.tensor([r.is_step for r in rows], dtype=torch.bool)
        refs = [(r.ref_chosen_logp, r.ref_rejected_logp) for r in rows]
        if all(c is not None and rj is not None for c, rj in refs):
            batch["ref_chosen_logps"] = torch.tensor([c for c, _ in refs], dtype=torch.float32)
            batch["ref_rejected_logps"] = torch.tensor([rj for _, rj in refs], dtype=torch.float32)
        return batch
