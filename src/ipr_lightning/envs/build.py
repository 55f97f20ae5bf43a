"""`build_env(cfg.env, split)`: everything a stage needs to run episodes on one split.

The handle bundles the env factory (one instance per live episode), the split's task ids,
the prompt start (the one `build_prompt`, with the configured in-context example), and the
split's expert trajectories. A plain if/else over the few environments — no registry.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ipr_lightning.config import ConfigError, EnvConfig
from ipr_lightning.data.records import Trajectory, Turn
from ipr_lightning.envs.base import ACTION_LINE_RE, TextEnv, build_prompt

TOY_SPLIT_SEEDS = {"train": 0, "valid_seen": 1, "valid_unseen": 2}


@dataclass
class EnvHandle:
    name: str
    split: str
    make_env: Callable[[], TextEnv]
    task_ids: list[str]
    expert: Callable[[], list[Trajectory]]
    """Expert trajectories of this split (played in the env; may take a while)."""
    example_for: Callable[[str], list[Turn] | None] = lambda task_id: None
    """In-context example turns (task, actions, observations) for a task, when configured."""
    action_end: re.Pattern[str] | None = ACTION_LINE_RE
    """What a complete action looks like: generation stops there (see `Sampling`)."""
    group_of: Callable[[str], str] | None = None
    """A task's group for per-group reports (InterCode-SQL: the question's hardness)."""

    def build_start(self, env: TextEnv, obs: str) -> list[Turn]:
        return build_prompt(env.instruction, obs, self.example_for(env.task_id))


def split_size(cfg: EnvConfig, split: str) -> int:
    sizes = {
        "train": cfg.n_train,
        "valid_seen": cfg.n_valid_seen,
        "valid_unseen": cfg.n_valid_unseen,
    }
    if split not in sizes:
        raise ConfigError(f"unknown split {split!r}; expected one of {sorted(sizes)}")
    return sizes[split]


def example_turns(trajectory: Trajectory) -> list[Turn]:
    """An expert trajectory minus its instruction/OK start: task, then actions/observations."""
    turns = trajectory.turns[2:]
    while turns and turns[-1].role != "assistant":
        turns = turns[:-1]
    return turns


def build_toy(cfg: EnvConfig, split: str) -> EnvHandle:
    from ipr_lightning.envs.toy import ToyEnv, expert_trajectory, make_task

    n = split_size(cfg, split)
    tasks = {t.id: t for t in (make_task(i, TOY_SPLIT_SEEDS[split]) for i in range(n))}

    def make_env() -> ToyEnv:
        return ToyEnv(tasks, cfg.max_turns)

    example: list[Turn] | None = None
    if cfg.in_context_example:  # always a train task: never leak an evaluation task
        train_task = make_task(0, TOY_SPLIT_SEEDS["train"])
        example = example_turns(expert_trajectory(ToyEnv({train_task.id: train_task}), train_task))

    def expert() -> list[Trajectory]:
        env = make_env()
        return [expert_trajectory(env, task, example) for task in tasks.values()]

    return EnvHandle("toy", split, make_env, list(tasks), expert, lambda task_id: example)


def build_env(cfg: EnvConfig, split: str) -> EnvHandle:
    if cfg.name == "toy":
        return build_toy(cfg, split)
    if cfg.name == "alfworld":
        from ipr_lightning.envs.alfworld_handle import build_alfworld

        return build_alfworld(cfg, split)
    if cfg.name == "intercode_sql":
        from ipr_lightning.envs.sql_handle import build_intercode_sql

        return build_intercode_sql(cfg, split)
    if cfg.name == "webshop":
        from ipr_lightning.envs.webshop_handle import build_webshop

        return build_webshop(cfg, split)
    raise ConfigError(f"env.name: unknown environment {cfg.name!r}")
