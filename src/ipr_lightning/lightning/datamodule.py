"""IPRDataModule: serves expert trajectories for SFT, then a preference-pair file per phase.

Config comes at construction, the tokenizer later through `connect` (it is a runtime object
that the CLI loads once and shares with the module's generation code). The pairs file in use
is part of `state_dict`, so a resumed run serves the same data it was training on.

An iteration without (trainable) pairs serves one `{"no_pairs": True}` batch per epoch that
the module skips: Lightning would end the whole fit on an empty loader, and the iterations
after it must still run.
"""

from __future__ import annotations

import random
from importlib import resources
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset
from transformers import PreTrainedTokenizerBase

from ipr_lightning.config import ConfigError, DataConfig
from ipr_lightning.data.datasets import (
    PairCollator,
    PairDataset,
    SeededBatches,
    SFTCollator,
    SFTDataset,
    SharedPrefixCollator,
    row_length,
)
from ipr_lightning.data.io import read_pairs, read_trajectories
from ipr_lightning.data.records import Trajectory

EMBEDDED_FILES = {"embedded:demo": "demo_trajectories.json"}


def resolve_data_file(name: str) -> Path:
    """A path on disk, or one of the files shipped in the package (`embedded:demo`)."""
    if name in EMBEDDED_FILES:
        return Path(str(resources.files("ipr_lightning") / "resources" / EMBEDDED_FILES[name]))
    if name.startswith("embedded:"):
        raise ValueError(f"unknown embedded data {name!r}; known: {sorted(EMBEDDED_FILES)}")
    return Path(name).expanduser()


def split_train_val(
    items: list[Trajectory], val_fraction: float, seed: int
) -> tuple[list[Trajectory], list[Trajectory]]:
    """Deterministic split by seed; at least one validation item when the fraction is > 0."""
    if val_fraction <= 0 or len(items) < 2:
        return list(items), []
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(val_fraction * len(items)))
    val_idx = set(order[:n_val])
    return (
        [x for i, x in enumerate(items) if i not in val_idx],
        [x for i, x in enumerate(items) if i in val_idx],
    )


class EpochLoader(DataLoader):
    """A training loader over `SeededBatches` whose state Lightning keeps in its checkpoints,
    so that a run restored mid-epoch is served the rest of that epoch."""

    def state_dict(self) -> dict[str, int]:
        return self.batch_sampler.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.load_state_dict(state)


class IPRDataModule(L.LightningDataModule):
    def __init__(self, cfg: DataConfig, seed: int = 0, shared_prefix: bool = False) -> None:
        """`shared_prefix`: serve each pair as one packed row (`SharedPrefixCollator`)."""
        super().__init__()
        self.cfg, self.seed, self.shared_prefix = cfg, seed, shared_prefix
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.pairs_file: str | None = None
        """Preference pairs being served; None while in the SFT phase."""
        self.trajectories: list[Trajectory] | None = None
        self.train_data: Dataset | None = None
        self.val_data: Dataset | None = None
        self.batches: SeededBatches | None = None

    def connect(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer

    def use_pairs(self, path: str | Path, rendered: PairDataset | None = None) -> None:
        """Serve this pairs file from the next dataloader build on (preference phase);
        `rendered`: the file's pairs already rendered (else they are read and rendered)."""
        self.pairs_file = str(path)
        self.train_data, self.val_data = rendered, None  # preference phases: no validation

    def use_trajectories(self, trajectories: list[Trajectory]) -> None:
        """Serve these expert trajectories instead of reading `cfg.train_file`."""
        self.trajectories, self.train_data = list(trajectories), None

    def read(self) -> list[Trajectory]:
        """Read and validate the expert trajectories (no tokenizer needed: fails fast)."""
        if self.trajectories is None:
            self.trajectories = read_trajectories(resolve_data_file(self.cfg.train_file))
        return self.trajectories

    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is None:
            raise RuntimeError("IPRDataModule.connect(tokenizer) must be called before setup")
        if self.train_data is not None:
            return
        if self.pairs_file is not None:
            self.train_data = PairDataset(
                read_pairs(self.pairs_file), self.tokenizer, self.cfg.max_length
            )
            self.val_data = None
            return
        train, val = split_train_val(self.read(), self.cfg.val_fraction, self.seed)
        everything = self.cfg.loss_on == "all"
        self.train_data = SFTDataset(train, self.tokenizer, self.cfg.max_length, everything)
        try:
            self.val_data = (
                SFTDataset(val, self.tokenizer, self.cfg.max_length, everything) if val else None
            )
        except ConfigError:  # training rows fit but no validation row does: no validation
            self.val_data = None

    def pair_collator(self) -> PairCollator:
        assert self.tokenizer is not None
        pad = self.tokenizer.pad_token_id
        return SharedPrefixCollator(pad) if self.shared_prefix else PairCollator(pad)

    def _collator(self) -> SFTCollator | PairCollator:
        assert self.tokenizer is not None
        if self.pairs_file:
            return self.pair_collator()
        return SFTCollator(self.tokenizer.pad_token_id)

    @property
    def has_pairs(self) -> bool:
        """Whether the preference phase being served has pairs to train on."""
        self.setup("fit")
        return self.pairs_file is None or len(self.train_data) > 0

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        assert self.train_data is not None
        if not self.has_pairs:
            self.batches = None
            return DataLoader([None], batch_size=1, collate_fn=lambda _: {"no_pairs": True})
        lengths = None
        if self.cfg.group_by_length and self.cfg.shuffle:
            lengths = [row_length(self.train_data[i]) for i in range(len(self.train_data))]
        trainer = self.trainer
        self.batches = SeededBatches(
            len(self.train_data),
            self.cfg.batch_size,
            self.seed,
            lengths,
            epoch_of=(lambda: trainer.current_epoch) if trainer is not None else None,
            shuffle=self.cfg.shuffle,
            rank=trainer.global_rank if trainer is not None else 0,
            world=trainer.world_size if trainer is not None else 1,
        )
        return EpochLoader(
            self.train_data,
            batch_sampler=self.batches,
            collate_fn=self._collator(),
            num_workers=self.cfg.num_workers,
        )

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Count the training batches given to the model (here, at use: the loader prefetches)
        for a mid-epoch checkpoint."""
        if self.batches is not None and self.trainer is not None and self.trainer.training:
            self.batches.trained += 1
        return batch

    def val_dataloader(self) -> DataLoader | list:
        self.setup("fit")
        if self.val_data is None:
            return []
        return DataLoader(
            self.val_data,
            batch_size=self.cfg.batch_size,
            shuffle=False,
            collate_fn=self._collator(),
            num_workers=self.cfg.num_workers,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"pairs_file": self.pairs_file}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pairs_file = state_dict.get("pairs_file")
        if pairs_file is not None and pairs_file != self.pairs_file:
            self.use_pairs(pairs_file)
