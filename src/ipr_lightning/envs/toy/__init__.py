"""The toy household (`env.name: toy`): the smallest complete environment, and the template
for adding one (README, "Adding an environment").

- `env.py`: the env (`ToyEnv`), its tasks, its scripted expert and its builder `build_toy`.
- here: its options (`env.options.*`) and its registration. Importing this package imports
  nothing heavy: the builder is named as a string and loaded on the first build.
"""

from __future__ import annotations

from dataclasses import dataclass

from ipr_lightning.config import ConfigError
from ipr_lightning.envs.registry import register_env


@dataclass
class ToyOptions:
    n_train: int = 2000
    """Tasks in the train split."""
    n_valid_seen: int = 140
    """Tasks in valid_seen."""
    n_valid_unseen: int = 134
    """Tasks in valid_unseen."""

    def __post_init__(self) -> None:
        if min(self.n_train, self.n_valid_seen, self.n_valid_unseen) < 0:
            raise ConfigError("env.options.n_train, n_valid_seen and n_valid_unseen must be >= 0")


SPEC = register_env(
    "toy",
    "ipr_lightning.envs.toy.env:build_toy",
    options=ToyOptions,
    step_tau=0.5,
    splits=("train", "valid_seen", "valid_unseen"),
)
