"""`build_alfworld(cfg.env, split)`: the ALFWorld `EnvHandle` (registered in `__init__.py`).

Data root, in order: `env.options.data_dir`, `$ALFWORLD_DATA` (the official json_2.1.1
games), else the generated games for `env.options.n_train/n_valid_seen/n_valid_unseen/
generation_seed`
(generated on first use, cached; the log says loudly that these are not the official split).
With official data every game of the split is used; the `n_*` sizes only size generation.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from ipr_lightning.config import ConfigError, EnvConfig
from ipr_lightning.data.io import (
    DataFileError,
    read_trajectories,
    turns_to_json,
    write_trajectories,
)
from ipr_lightning.data.records import Trajectory, Turn
from ipr_lightning.envs.alfworld import env as narrator_module
from ipr_lightning.envs.alfworld.engine import require_alfworld, task_type_of
from ipr_lightning.envs.alfworld.env import AlfworldEnv
from ipr_lightning.envs.alfworld.games import expert_trajectories, resolve_alfworld_data
from ipr_lightning.envs.base import EnvHandle, env_cache_dir

log = logging.getLogger("ipr_lightning")


def expert_cache_file(
    root: Path, split: str, game_ids: list[str], max_turns: int, examples: dict | None
) -> Path:
    """Where the expert's trajectories for exactly these games and settings are kept: the
    key covers the data root, games, max_turns, in-context examples and the expert's own
    source (a changed expert never serves stale trajectories)."""
    key = json.dumps(
        [
            str(root.resolve()),
            split,
            game_ids,
            max_turns,
            {t: turns_to_json(turns) for t, turns in (examples or {}).items()},
            hashlib.sha256(Path(narrator_module.__file__).read_bytes()).hexdigest(),
        ]
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return env_cache_dir("alfworld") / "experts" / f"{split}-{digest}.json"


def alfworld_root(cfg: EnvConfig, progress: bool = True) -> Path:
    """The data root holding json_2.1.1/ for this config (generating games if needed)."""
    if cfg.options.data_dir:
        root = Path(cfg.options.data_dir).expanduser()
        if not (root / "json_2.1.1").is_dir():
            raise ConfigError(f"env.options.data_dir: {root} has no json_2.1.1/ folder")
        return root
    try:
        return resolve_alfworld_data(
            cfg.options.n_train,
            cfg.options.n_valid_seen,
            cfg.options.n_valid_unseen,
            cfg.options.generation_seed,
            cfg.options.workers,
            progress,
            cfg.options.task_types if cfg.options.generate_task_types else (),
        )
    except FileNotFoundError as exc:  # $ALFWORLD_DATA set to a folder without the games
        raise ConfigError(str(exc)) from None


def build_alfworld(cfg: EnvConfig, split: str, progress: bool = True) -> EnvHandle:
    try:
        require_alfworld()
    except ImportError as exc:
        raise ConfigError(str(exc)) from None
    root = alfworld_root(cfg, progress)
    try:
        first = AlfworldEnv(root, split, cfg.max_turns)
    except FileNotFoundError as exc:
        raise ConfigError(f"ALFWorld data at {root}: {exc}") from None
    task_ids = [
        t
        for t in first.task_ids()
        if not cfg.options.task_types or task_type_of(t) in cfg.options.task_types
    ]
    if not task_ids:
        kept = f" of types {cfg.options.task_types}" if cfg.options.task_types else ""
        raise ConfigError(f"ALFWorld data at {root}: no playable games{kept} in split {split!r}")
    spare = [first]  # the env that listed the games serves the first episode

    def make_env() -> AlfworldEnv:
        return spare.pop() if spare else AlfworldEnv(root, split, cfg.max_turns)

    def example_for(task_id: str) -> list[Turn] | None:
        if not cfg.in_context_example:
            return None
        return first.example_for(task_type_of(task_id))  # cached per type; a train game

    def expert() -> list[Trajectory]:
        """The handcoded expert on every game of the split, played once per machine: later
        runs (each seed of a bench, each resumed run) read the cached file."""
        examples = None
        if cfg.in_context_example:
            types = dict.fromkeys(map(task_type_of, task_ids))
            examples = {t: first.example_for(t) for t in types}
        cached = expert_cache_file(root, split, task_ids, cfg.max_turns, examples)
        if cached.is_file():
            try:
                return read_trajectories(cached)
            except DataFileError as exc:  # a damaged cache is replayed, never trusted
                log.warning("ALFWorld expert cache unreadable, replaying the expert: %s", exc)
        trajectories = expert_trajectories(
            root,
            split,
            game_ids=task_ids,
            progress=progress,
            workers=cfg.options.workers,
            max_turns=cfg.max_turns,
            examples=examples,
        )
        write_trajectories(cached, trajectories)
        return trajectories

    return EnvHandle("alfworld", split, make_env, task_ids, expert, example_for)
