"""ipr-lightning: IPR (Iterative step-level Process Refinement) agent training on Lightning."""

__version__ = "0.1.0"
