"""Lightning edge: the IPR LightningModule and DataModule."""
