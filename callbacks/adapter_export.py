"""AdapterExport: write the trained adapter as a plain peft folder when fitting ends (also
when a resumed fit had nothing left to train).

The folder loads with `peft.PeftModel.from_pretrained(base_model, folder)` — no Lightning,
no checkpoint surgery. (Lightning checkpoints in `checkpoints/` are for resuming.)
"""

from __future__ import annotations

from pathlib import Path

import lightning as L

from ipr_lightning.lightning.module import check_finite_weights
from ipr_lightning.models import save_adapter


class AdapterExport(L.Callback):
    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # on_fit_end, not on_train_end: Lightning skips the training of a resumed fit whose
        # epochs are all done, and the export must still happen.
        check_finite_weights(pl_module, "at the end of training")
        if trainer.is_global_zero:
            save_adapter(pl_module.model, self.dirpath)
