"""ALFWorld (`env.name: alfworld`) on the real TextWorld engine, with the paper's prompts.

- `engine.py`: games, the PDDL engine and the handcoded expert's plays;
- `env.py`: the env (`AlfworldEnv`) and the narrated expert trajectories;
- `games.py`, `scenes.py`: generated games (when the official data is absent);
- `handle.py`: the builder, `build_alfworld`;
- here: its options (`env.options.*`) and its registration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ipr_lightning.config import ConfigError
from ipr_lightning.envs.alfworld.engine import SPLITS, TASK_TYPES
from ipr_lightning.envs.registry import register_env


@dataclass
class AlfworldOptions:
    data_dir: str | None = None
    """ALFWorld data root holding json_2.1.1/; unset: $ALFWORLD_DATA, else generated games."""
    task_types: list[str] = field(default_factory=list)
    """Task types to keep in every split (empty: all six), e.g. `[pick_and_place_simple]`;
    `ipr-data alfworld stats` lists them."""
    generate_task_types: bool = False
    """Generate games of `task_types` only (`n_*` games of those types per split) instead of
    games of all six types that `task_types` then filters (generated games only)."""
    n_train: int = 2000
    """Generated games in the train split (when no official data is used)."""
    n_valid_seen: int = 140
    """Generated games in valid_seen (paper: 140)."""
    n_valid_unseen: int = 134
    """Generated games in valid_unseen (paper: 134)."""
    generation_seed: int = 0
    """Seed of the generated games."""
    workers: int = 2
    """Processes for generating games and playing the expert (not for the model)."""

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"env.options.workers must be at least 1, got {self.workers}")
        if min(self.n_train, self.n_valid_seen, self.n_valid_unseen) < 0:
            raise ConfigError("env.options.n_train, n_valid_seen and n_valid_unseen must be >= 0")
        unknown = sorted(set(self.task_types) - set(TASK_TYPES))
        if unknown:
            raise ConfigError(
                f"env.options.task_types: unknown {unknown}; known: {list(TASK_TYPES)}"
            )
        if self.generate_task_types and not self.task_types:
            raise ConfigError("env.options.generate_task_types=true needs env.options.task_types")


SPEC = register_env(
    "alfworld",
    "ipr_lightning.envs.alfworld.handle:build_alfworld",
    options=AlfworldOptions,
    step_tau=0.5,
    splits=SPLITS,
    task_key="game_file",
)
