"""The text-agent environment protocol, the one ReAct parser, and the one prompt builder.

Every environment (toy, ALFWorld, InterCodeSQL, WebShop-style) is Gymnasium-shaped:

    obs, info = env.reset(options={"task_id": "..."})
    obs, reward, terminated, truncated, info = env.step(model_output)

`step` takes the model's whole output (`Thought: ...\\nAction: ...`); `parse_react` is the
only place that extracts the action. Output without a usable action becomes the env's
invalid-action observation with `info["invalid"] = True` (counted by the rollout engine),
never an exception; `info["invalid"]` is also set when the env rejects a well-formed
command. Reaching `max_turns` without finishing is `truncated`.

`build_prompt` makes the conversation start used identically by SFT data, exploration, MC
scoring and evaluation: instruction, `OK`, optional in-context example turns, then the task.
`EnvHandle` is what an environment's builder returns for one split (see `registry.py`).
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ipr_lightning.data.records import Trajectory, Turn

ACTION_RE = re.compile(r"^\s*Action\s*:\s?", re.MULTILINE | re.IGNORECASE)
# A finished one-line action: the `Action: ...` line and its newline (ALFWorld, the toy env).
ACTION_LINE_RE = re.compile(r"^[ \t]*Action[ \t]*:[^\n]*\S[^\n]*\n", re.MULTILINE | re.IGNORECASE)


def env_cache_dir(name: str) -> Path:
    """`~/.cache/ipr_lightning/<name>` ($XDG_CACHE_HOME honoured): generated/converted env data."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ipr_lightning" / name


@dataclass(frozen=True)
class ParsedOutput:
    thought: str | None
    action: str | None
    """The text after the last `Action:` marker, stripped; None when there is none."""


def parse_react(text: str) -> ParsedOutput:
    """Split `Thought: ...\\nAction: ...` output. Only the part after the last `Action:` line
    marker is the action (models sometimes restate earlier ones in their thought)."""
    matches = list(ACTION_RE.finditer(text))
    if not matches:
        return ParsedOutput(None, None)
    last = matches[-1]
    action = text[last.end() :].strip()
    thought = text[: last.start()].strip()
    thought = re.sub(r"^\s*Thought\s*:\s*", "", thought, flags=re.IGNORECASE) or None
    return ParsedOutput(thought, action or None)


OPENING_TURNS = 2
"""The instruction (user) and its `OK` (assistant): the turns before the example or task."""


def build_prompt(instruction: str, task: str, example: Sequence[Turn] | None = None) -> list[Turn]:
    """instruction / OK / [in-context example turns] / task — the one conversation start."""
    turns = [Turn("user", instruction), Turn("assistant", "OK")]
    if example:
        if example[0].role != "user" or example[-1].role != "assistant":
            raise ValueError("an in-context example must start with user and end with assistant")
        turns.extend(example)
    turns.append(Turn("user", task))
    return turns


class TextEnv(ABC):
    """Base of every environment: turn counting, parsing, truncation; subclasses do the rest.

    Subclasses implement `task_ids`, `_reset(task_id) -> (obs, info)`,
    `_step(action) -> (obs, reward, done, info)` and set `instruction`; they may override
    `to_action` (e.g. keep only the first line) and `invalid_observation`.
    """

    max_turns: int = 20
    instruction: str = ""
    invalid_observation: str = "Nothing happens."

    def __init__(self) -> None:
        self._turns = 0
        self._task_id: str | None = None

    @abstractmethod
    def task_ids(self) -> list[str]: ...

    @abstractmethod
    def _reset(self, task_id: str) -> tuple[str, dict[str, Any]]: ...

    @abstractmethod
    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]: ...

    @property
    def task_id(self) -> str | None:
        """The task of the current episode (None before the first reset)."""
        return self._task_id

    def to_action(self, parsed: ParsedOutput) -> str | None:
        """The env command for parsed output, or None if unusable (default: first line)."""
        if parsed.action is None:
            return None
        return parsed.action.splitlines()[0].strip() or None

    def close(self) -> None:  # noqa: B027 - most envs hold nothing to release
        """Release what the env holds (connections, processes); reset() may follow."""

    def format_observation(self, obs: str) -> str:
        """How a step's observation appears as the next user turn."""
        return f"Observation: {obs}"

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        task_id = (options or {}).get("task_id")
        if task_id is None:
            raise ValueError("reset needs options={'task_id': ...}")
        self._turns, self._task_id = 0, str(task_id)
        obs, info = self._reset(self._task_id)
        return obs, {"task_id": self._task_id, **info}

    def step(self, output: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._task_id is None:
            raise RuntimeError("call reset() before step()")
        self._turns += 1
        action = self.to_action(parse_react(output))
        if action is None:  # malformed output: the env's "invalid" answer, never a crash
            obs, reward, done = self.invalid_observation, 0.0, False
            info = {"invalid": True, "malformed": True}
        else:
            obs, reward, done, info = self._step(action)
            info = {"invalid": obs == self.invalid_observation, "malformed": False, **info}
        truncated = not done and self._turns >= self.max_turns
        return obs, reward, done, truncated, {"action": action, **info}


def record_episode(
    env: TextEnv,
    task_id: str,
    next_output: Callable[[str, dict[str, Any]], str | None],
    example: Sequence[Turn] | None = None,
    meta: dict[str, Any] | None = None,
) -> Trajectory:
    """Play a scripted agent in `env` and record it in the prompt format every stage uses.

    `next_output(obs, info)` gets the latest observation and info (the reset's, then each
    step's) and returns the next `Thought: ...\nAction: ...` output, or None to stop."""
    obs, info = env.reset(options={"task_id": task_id})
    turns = build_prompt(env.instruction, obs, example)
    reward = 0.0
    while (output := next_output(obs, info)) is not None:
        turns.append(Turn("assistant", output))
        obs, reward, terminated, truncated, info = env.step(output)
        if terminated or truncated:
            break
        turns.append(Turn("user", env.format_observation(obs)))
    return Trajectory(task_id, turns, float(reward), meta or {})


def task_turn(n_example_turns: int) -> int:
    """Index of the task turn in a conversation whose example has `n_example_turns` turns."""
    return OPENING_TURNS + n_example_turns


def with_example(turns: Sequence[Turn], example: Sequence[Turn]) -> list[Turn]:
    """The conversation with the in-context example between `OK` and the task, inserted
    when the record lacks it (the paper's data has none). A record whose turns after `OK`
    merely equal the example (the example's own task, recorded without one) gets it too."""
    task = task_turn(len(example))
    if not example or (list(turns[OPENING_TURNS:task]) == list(example) and len(turns) > task):
        return list(turns)
    return [*turns[:OPENING_TURNS], *example, *turns[OPENING_TURNS:]]


def example_turns(trajectory: Trajectory) -> list[Turn]:
    """An expert trajectory as an in-context example: without the instruction and its `OK`,
    so the task, then actions/observations, ending on an action."""
    turns = trajectory.turns[OPENING_TURNS:]
    while turns and turns[-1].role != "assistant":
        turns = turns[:-1]
    return turns


@dataclass
class EnvHandle:
    """One split of an environment, as its builder returns it: everything a stage needs to
    run episodes there."""

    name: str
    split: str
    make_env: Callable[[], TextEnv]
    """A fresh env instance (one per live episode)."""
    task_ids: list[str]
    expert: Callable[[], list[Trajectory]]
    """Expert trajectories of this split (played in the env; may take a while)."""
    example_for: Callable[[str], list[Turn] | None] = lambda task_id: None
    """In-context example turns (task, actions, observations) for a task, when configured."""
    group_of: Callable[[str], str] | None = None
    """A task's group for per-group reports (InterCode-SQL: the question's hardness)."""
    spec: Any = None
    """The env's registration (`EnvSpec`), attached by `build_env`."""

    @property
    def action_end(self) -> re.Pattern[str] | None:
        """What a complete action looks like: generation stops there (see `Sampling`)."""
        return self.spec.action_end if self.spec is not None else ACTION_LINE_RE

    def task_of(self, record: Trajectory) -> str:
        """The task an expert record plays (the registration's `task_key`; default its id)."""
        return self.spec.task_of(record) if self.spec is not None else record.id

    def build_start(self, env: TextEnv, obs: str) -> list[Turn]:
        return build_prompt(env.instruction, obs, self.example_for(env.task_id))
