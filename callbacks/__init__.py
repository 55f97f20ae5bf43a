"""Lightning callbacks, installed as `ipr_lightning.callbacks` (source: repo-root `callbacks/`)."""

from ipr_lightning.callbacks.adapter_export import AdapterExport
from ipr_lightning.callbacks.ipr_loop import IPRLoop
from ipr_lightning.callbacks.last_checkpoint import LastCheckpoint

__all__ = ["AdapterExport", "IPRLoop", "LastCheckpoint"]
