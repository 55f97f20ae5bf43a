"""Does an environment agree with its expert trajectories? (`ipr-data check-env NAME`)

IPR replays expert prefixes in the env and compares the agent with the expert there, so an
env whose trajectories it cannot replay gives wrong pairs without any error. `check_env`
replays every trajectory step by step in a fresh episode and checks, per record:

- its task (the registration's `task_key`) is a task of the split;
- its conversation start is the handle's (instruction, `OK`, [example], task: the env's
  reset observation);
- every action is accepted, and every observation in the record is the one the env gives;
- the episode ends exactly after the last action, with the record's reward (when it has one).

The first difference in a record is one line naming the file, record, turn and what differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tqdm.auto import tqdm

from ipr_lightning.data.records import Dialogue, Trajectory, Turn
from ipr_lightning.envs.base import OPENING_TURNS, EnvHandle, TextEnv, with_example

REWARD_TOLERANCE = 1e-6


@dataclass
class CheckReport:
    records: int
    steps: int
    problems: list[str]


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _first_difference(record: Sequence[Turn], expected: Sequence[Turn]) -> str:
    for i, want in enumerate(expected):
        if i >= len(record):
            return (
                f"conversations[{i}]: the record ends where the env's prompt has a {want.role} turn"
            )
        got = record[i]
        if got != want:
            part = ("instruction", "OK")[i] if i < OPENING_TURNS else "example or task"
            return (
                f"conversations[{i}] ({part}): record {got.role} {_short(got.content)}, "
                f"env {want.role} {_short(want.content)}"
            )
    return ""


def check_record(handle: EnvHandle, env: TextEnv, record: Trajectory) -> tuple[int, str]:
    """(steps replayed, the first problem or "") for one expert record, played in `env`."""
    task_id = handle.task_of(record)
    if task_id not in handle.task_ids:
        key = handle.spec.task_key if handle.spec is not None else "id"
        return 0, f"field {key}: {task_id!r} is not a task of the {handle.split} split"
    obs, _ = env.reset(options={"task_id": task_id})
    start = handle.build_start(env, obs)
    turns = with_example(record.turns, handle.example_for(task_id) or [])
    if turns[: len(start)] != start:
        return 0, f"prompt start: {_first_difference(turns, start)}"
    try:
        dialogue = Dialogue.of(turns, len(start))
    except ValueError as exc:
        return 0, str(exc)
    if not dialogue.steps:
        return 0, "no action after the prompt start"
    reward = 0.0
    for j, step in enumerate(dialogue.steps):
        turn = dialogue.action_turn(j)
        obs, reward, terminated, truncated, info = env.step(step.action)
        if info.get("invalid"):
            return j, f"conversations[{turn}]: the env rejects action {j + 1} ({_short(obs)})"
        last = j == len(dialogue.steps) - 1
        if terminated or truncated:
            if not last:
                more = len(dialogue.steps) - j - 1
                return j + 1, (
                    f"conversations[{turn}]: the episode ends after action {j + 1} "
                    f"({'done' if terminated else 'turn limit'}), but the record has "
                    f"{more} more"
                )
            if step.observation is not None:
                return j + 1, (
                    f"conversations[{turn + 1}]: the record has an observation after the action "
                    "that ended the episode"
                )
            break
        if step.observation is None:
            return j + 1, f"conversations[{turn}]: the record ends, but the episode goes on"
        expected = env.format_observation(obs)
        if step.observation != expected:
            return j + 1, (
                f"conversations[{turn + 1}]: observation after action {j + 1} differs: record "
                f"{_short(step.observation)}, env {_short(expected)}"
            )
    if record.reward is not None and abs(record.reward - reward) > REWARD_TOLERANCE:
        return len(dialogue.steps), (
            f"field reward: the record says {record.reward}, the replay earns {reward}"
        )
    return len(dialogue.steps), ""


def check_env(
    handle: EnvHandle, records: Sequence[Trajectory], source: str, progress: bool = False
) -> CheckReport:
    """Replay every record (see the module docstring); one problem line per bad record."""
    steps, problems = 0, []
    env = handle.make_env()
    try:
        for index, record in enumerate(tqdm(records, desc="check-env", disable=not progress)):
            n, problem = check_record(handle, env, record)
            steps += n
            if problem:
                problems.append(f"{source}: record {index} (id {record.id!r}): {problem}")
    finally:
        env.close()
    return CheckReport(len(records), steps, problems)
