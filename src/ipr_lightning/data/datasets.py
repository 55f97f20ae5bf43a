"""Map-style datasets over rendered conversations and pairs, with truncation counts.

Rendering happens once, up front (tokenising a few thousand trajectories takes seconds), so
the counts of truncated rows are known before training starts and can be reported. SFT rows
are cut on the right; pairs first lose old prompt history (`render.render_pair`), and a pair
left with nothing to train on one side is not served.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler
from transformers import PreTrainedTokenizerBase

from ipr_lightning.config import ConfigError
from ipr_lightning.data.records import PreferencePair, Trajectory
from ipr_lightning.data.render import (
    IGNORE_INDEX,
    FittedPair,
    Rendered,
    pad_batch,
    render_conversation,
    render_pair,
)

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
    """Expert trajectories rendered with assistant-only labels (`all_tokens`: every token
    labelled; a row still needs an assistant token within `max_length` to be kept)."""

    def __init__(
        self,
        trajectories: Sequence[Trajectory],
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
        all_tokens: bool = False,
    ) -> None:
        self.stats = RenderStats()
        self.rows = []
        for t in trajectories:
            r = render_conversation(tokenizer, t.turns, max_length)
            if all_tokens and r.num_trained:
                r = replace(r, labels=list(r.input_ids))
            self.stats.add(r)
            if r.num_trained:  # counted and reported above; an all-masked row has no loss
                self.rows.append(r)
        if trajectories and not self.rows:
            raise ConfigError(
                f"data.max_length={max_length}: none of the {len(trajectories)} SFT "
                "conversations has an assistant token within it (the prompts are longer); "
                "raise data.max_length"
            )
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

    @cached_property
    def shared(self) -> int:
        """Leading tokens both rows have in common, none of them trained: the prompt as the
        two rows tokenised it (a token merged across the prompt's end is not shared)."""
        n = 0
        for a, b, la, lb in zip(
            self.chosen.input_ids, self.rejected.input_ids, self.chosen.labels,
            self.rejected.labels, strict=False,
        ):  # fmt: skip
            if a != b or la != IGNORE_INDEX or lb != IGNORE_INDEX:
                break
            n += 1
        return n


@dataclass
class PairStats:
    """What fitting preference pairs into `max_length` did; a pair may count in several."""

    pairs: int = 0
    """Pairs given to the dataset."""
    served: int = 0
    """Pairs in the dataset (all but `dropped_untrained`)."""
    too_long: int = 0
    """Pairs with a side longer than max_length as rendered in full."""
    history_shortened: int = 0
    """Pairs whose oldest prompt history turns were dropped (the same on both sides)."""
    history_turns_dropped: int = 0
    """Prompt turns dropped in all (two per action/observation)."""
    cut_right: int = 0
    """Pairs with a side cut on the right: still too long with no history left to drop."""
    dropped_untrained: int = 0
    """Pairs not served: the chosen or the rejected side had no trained token left."""
    trained_tokens: int = 0
    """Trained tokens of the served pairs, both sides."""

    def add(self, fitted: FittedPair) -> bool:
        """Count one pair; True when it has trained tokens on both sides (serve it)."""
        rows = (fitted.chosen, fitted.rejected)
        self.pairs += 1
        self.too_long += fitted.too_long
        self.history_shortened += fitted.dropped_turns > 0
        self.history_turns_dropped += fitted.dropped_turns
        self.cut_right += any(r.truncated for r in rows)
        if any(r.num_trained == 0 for r in rows):
            self.dropped_untrained += 1
            return False
        self.served += 1
        self.trained_tokens += sum(r.num_trained for r in rows)
        return True

    def report(self, what: str, max_length: int) -> None:
        if self.too_long:
            log.warning(
                "%s: %d of %d pairs exceed max_length=%d: %d shortened by dropping %d old "
                "history turns, %d cut on the right, %d dropped with nothing left to train "
                "on one side; %d served",
                what,
                self.too_long,
                self.pairs,
                max_length,
                self.history_shortened,
                self.history_turns_dropped,
                self.cut_right,
                self.dropped_untrained,
                self.served,
            )


class PairDataset(Dataset):
    """Preference pairs: prompt + chosen and prompt + rejected, only completions trained.

    Too-long pairs lose old prompt history, then are cut on the right (`render_pair`); a pair
    with no trained token left on a side would only add a constant log 2 to the loss, so it
    is counted in `stats.dropped_untrained` and not served.
    """

    def __init__(
        self, pairs: Sequence[PreferencePair], tokenizer: PreTrainedTokenizerBase, max_length: int
    ) -> None:
        self.stats = PairStats()
        self.rows = []
        self.sources: list[int] = []
        """Index in `pairs` of each served row."""
        for index, p in enumerate(pairs):
            fitted = render_pair(tokenizer, p, max_length)
            if self.stats.add(fitted):
                self.sources.append(index)
                self.rows.append(
                    RenderedPair(
                        fitted.chosen,
                        fitted.rejected,
                        p.is_step,
                        p.ref_chosen_logp,
                        p.ref_rejected_logp,
                    )
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
        batch.update(self._pair_fields(rows))
        return batch

    @staticmethod
    def _pair_fields(rows: list[RenderedPair]) -> dict[str, torch.Tensor]:
        fields = {"is_step": torch.tensor([r.is_step for r in rows], dtype=torch.bool)}
        refs = [(r.ref_chosen_logp, r.ref_rejected_logp) for r in rows]
        if all(c is not None and rj is not None for c, rj in refs):
            fields["ref_chosen_logps"] = torch.tensor([c for c, _ in refs], dtype=torch.float32)
            fields["ref_rejected_logps"] = torch.tensor([rj for _, rj in refs], dtype=torch.float32)
        return fields


class SharedPrefixCollator(PairCollator):
    """Each pair as ONE packed row: the shared prompt once, then the chosen continuation, then
    the rejected one, which attends to the prompt and to itself but not to the chosen tokens
    (a block mask) and continues the prompt's positions. The prompt's activations are computed
    and stored once per pair instead of twice, with gradients through them as in two rows.

    Keys: input_ids, position_ids [B, T]; pair_mask [B, 1, T, T] bool (True: may attend);
    targets [N], pred_rows [N] (flat index into [B, T] of the position predicting each
    target), row_index [N] (0..B-1 chosen, B..2B-1 rejected) and counts [2B]; is_step and the
    reference log-probs as `PairCollator`. Padding positions attend to themselves only.
    """

    def __call__(self, rows: list[RenderedPair]) -> dict[str, Any]:
        packed, spans = [], []
        for r in rows:
            p = r.shared
            if p < 1:
                raise ValueError("a pair without a shared first token cannot be packed")
            c_ids, r_ids = r.chosen.input_ids[p:], r.rejected.input_ids[p:]
            packed.append((r.chosen.input_ids[:p], c_ids, r_ids))
            spans.append((p, r.chosen.labels[p:], r.rejected.labels[p:]))
        width = max(len(a) + len(b) + len(c) for a, b, c in packed)
        n_pairs = len(rows)
        ids = torch.full((n_pairs, width), self.pad_id, dtype=torch.long)
        pos = torch.zeros((n_pairs, width), dtype=torch.long)
        allowed = torch.zeros((n_pairs, 1, width, width), dtype=torch.bool)
        targets, pred_rows, row_index = [], [], []
        counts = [0] * (2 * n_pairs)
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        for b, ((prompt, chosen, rejected), (p, c_labels, r_labels)) in enumerate(
            zip(packed, spans, strict=True)
        ):
            lc, lr = len(chosen), len(rejected)
            end = p + lc + lr
            ids[b, :end] = torch.tensor(prompt + chosen + rejected)
            pos[b, :end] = torch.cat([torch.arange(p + lc), torch.arange(p, p + lr)])
            allowed[b, 0, : p + lc, : p + lc] = causal[: p + lc, : p + lc]
            allowed[b, 0, p + lc : end, :p] = True
            allowed[b, 0, p + lc : end, p + lc : end] = causal[:lr, :lr]
            pad = torch.arange(end, width)
            allowed[b, 0, pad, pad] = True
            for side, (start, labels) in enumerate(((p, c_labels), (p + lc, r_labels))):
                for k, label in enumerate(labels):
                    if label == IGNORE_INDEX:
                        continue
                    # token k of the continuation is predicted by the token before it: the
                    # prompt's last token for k = 0 (both continuations), else its own k - 1
                    before = p - 1 if k == 0 else start + k - 1
                    targets.append(label)
                    pred_rows.append(b * width + before)
                    row_index.append(b + side * n_pairs)
                    counts[b + side * n_pairs] += 1
        batch = {
            "input_ids": ids,
            "position_ids": pos,
            "pair_mask": allowed,
            "targets": torch.tensor(targets, dtype=torch.long),
            "pred_rows": torch.tensor(pred_rows, dtype=torch.long),
            "row_index": torch.tensor(row_index, dtype=torch.long),
            "counts": torch.tensor(counts, dtype=torch.long),
        }
        batch.update(self._pair_fields(rows))
        return batch


def row_length(row: Rendered | RenderedPair) -> int:
    """Tokens a row pads its batch to (a pair: its longer side)."""
    if isinstance(row, RenderedPair):
        return max(len(row.chosen.input_ids), len(row.rejected.input_ids))
    return len(row.input_ids)


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random, group: int = 64
) -> list[list[int]]:
    """Every index once, in batches of similar lengths, in random order: shuffle, cut into
    groups of `group` batches, sort each group by length, batch it, shuffle the batches.
    Rows of one batch come from one random group, so an epoch still mixes the data."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    for start in range(0, len(order), group * batch_size):
        chunk = sorted(order[start : start + group * batch_size], key=lambda i: lengths[i])
        batches += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def shuffled_batches(n: int, batch_size: int, rng: random.Random) -> list[list[int]]:
    order = list(range(n))
    rng.shuffle(order)
    return [order[k : k + batch_size] for k in range(0, n, batch_size)]


class SeededBatches(Sampler[list[int]]):
    """Training batches whose order is a function of (seed, epoch) alone, so that a run killed
    mid-epoch can be served the rest of that very epoch: `skip` batches are left out of the
    next pass. Length-grouped when `lengths` are given, else plainly shuffled. `trained`
    counts the pass's batches the model was given (kept by the trainer's side, which knows
    when a batch is used rather than prefetched). `shuffle=False`: the data's order.

    Under DDP each rank is served `rank::world` of the epoch's batches (the list padded with
    its first batches to a multiple of `world`, so every rank takes as many steps); a pass
    cut short resumes on any number of ranks after the batches already served on all of
    them (on another world size up to world - 1 batches are served twice, none skipped)."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        lengths: Sequence[int] | None = None,
        epoch_of: Callable[[], int] | None = None,
        shuffle: bool = True,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.rank, self.world = rank, world
        self.lengths = None if lengths is None else list(lengths)
        self.epoch_of = epoch_of
        """The trainer's current epoch: a pass serves that epoch's order however many times
        the trainer starts one (Lightning starts two per epoch, one after a restart)."""
        self.next_epoch, self.skip, self.trained = 0, 0, 0
        self.skip_epoch = -1
        self.epoch = -1
        """The epoch whose batches the last pass served."""

    def all_batches(self, epoch: int) -> list[list[int]]:
        """The epoch's batches over all ranks."""
        if not self.shuffle:  # the data's own order, every epoch
            return [
                list(range(i, min(i + self.batch_size, self.n)))
                for i in range(0, self.n, self.batch_size)
            ]
        rng = random.Random(f"{self.seed}/{epoch}")
        if self.lengths is None:
            return shuffled_batches(self.n, self.batch_size, rng)
        return length_grouped_batches(self.lengths, self.batch_size, rng)

    def batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of the epoch."""
        every = self.all_batches(epoch)
        if self.world == 1:
            return every
        every += every[: -len(every) % self.world]
        return every[self.rank :: self.world]

    def __iter__(self) -> Iterator[list[int]]:
        self.epoch = self.epoch_of() if self.epoch_of else self.next_epoch
        self.next_epoch = self.epoch + 1
        self.trained = self.skip if self.epoch == self.skip_epoch else 0
        self.skip, self.skip_epoch = 0, -1
        return iter(self.batches(self.epoch)[self.trained :])

    def __len__(self) -> int:
        return math.ceil(math.ceil(self.n / self.batch_size) / self.world)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "trained": self.trained, "world": self.world}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Serve the rest of a pass that was cut short, or the next pass after a finished one
        (a checkpoint taken at an epoch's last batch, before its epoch end)."""
        state = {**state, "trained": state["trained"] * state.get("world", 1) // self.world}
        if 0 < state["trained"] < len(self):
            self.next_epoch, self.skip = state["epoch"], state["trained"]
            self.skip_epoch = state["epoch"]
        elif state["trained"] >= len(self) and state["epoch"] >= 0:
            self.next_epoch = state["epoch"] + 1
