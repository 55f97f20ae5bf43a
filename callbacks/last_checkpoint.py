"""LastCheckpoint: keep `checkpoints/last.ckpt` current while training, so that a kill loses
at most a few steps (`trainer.checkpoint_every_n_steps`) and never a whole phase.

It saves after every `every_n_steps` optimizer steps and at the end of every epoch, always
atomically (written beside, then renamed: a kill during a save leaves the previous file). A
mid-epoch checkpoint resumes mid-epoch: the DataModule records how many of the epoch's
batches were trained and serves the rest of that epoch's seeded order.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L

from ipr_lightning.lightning.module import check_finite_weights


def save_last(trainer: L.Trainer, path: str | Path) -> None:
    """`trainer.save_checkpoint` to `path`, atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    trainer.save_checkpoint(tmp)
    if trainer.is_global_zero:
        os.replace(tmp, path)


class LastCheckpoint(L.Callback):
    def __init__(self, path: str | Path, every_n_steps: int = 0) -> None:
        self.path, self.every_n_steps = Path(path), every_n_steps
        self._saved_step = -1

    def _save(self, trainer: L.Trainer) -> None:
        check_finite_weights(trainer.lightning_module, f"at step {trainer.global_step}")
        save_last(trainer, self.path)
        self._saved_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        step = trainer.global_step
        if self.every_n_steps and step % self.every_n_steps == 0 and step != self._saved_step:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._save(trainer)
