"""Lightning callbacks, installed as `ipr_lightning.callbacks` (source: repo-root `callbacks/`)."""

from ipr_lightning.callbacks.adapter_export import AdapterExport

__all__ = ["AdapterExport"]
