"""Expert trajectories as IPR tasks: aligned with the env's prompt, one per task, with rewards.

IPR replays expert prefixes in the env, so each expert record must start exactly as the env
handle starts a conversation (`build_prompt`: instruction, `OK`, the configured in-context
example, task). `align_experts` checks that and repairs the one common difference — a record
without the in-context example (the paper's data shape) under `env.in_context_example=true`
gets the example inserted — and refuses anything else with one line naming the file, record
and field. The aligned records also serve as SFT data, so SFT, exploration, scoring and
evaluation see the same prompts.

`expert_tasks` keeps the first record of each task (later ones still train SFT), splits each
into a `Dialogue` (the record type that knows where every action sits) and takes the final
reward from the record, or — when it has none — replays the actions once in the env and
measures it (partial WebShop rewards are common; assuming 1.0 would make wrong pairs).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm.auto import tqdm

from ipr_lightning.data.io import DataFileError
from ipr_lightning.data.records import Dialogue, Trajectory, Turn
from ipr_lightning.envs.base import EnvHandle, build_prompt, task_turn, with_example
from ipr_lightning.rollout.engine import EpisodeSpec, replay

log = logging.getLogger("ipr_lightning")


@dataclass(frozen=True)
class ExpertTask:
    """An expert trajectory of one task: its dialogue (start, steps) and final reward."""

    task_id: str
    dialogue: Dialogue
    reward: float

    @property
    def start(self) -> list[Turn]:
        """instruction, OK, [in-context example], task."""
        return list(self.dialogue.start)

    @property
    def actions(self) -> list[str]:
        """The expert's assistant outputs a_1..a_n."""
        return self.dialogue.actions

    def continuation(self, j: int) -> list[Turn]:
        """The expert's turns from action j+1 to the end."""
        return self.dialogue.after(j)


def _aligned(
    traj: Trajectory, example: list[Turn], err: Callable[[str], DataFileError]
) -> tuple[Trajectory, int]:
    """The record with the handle's conversation start, and the length of that start."""
    turns = list(traj.turns)
    if turns and turns[0].role == "system":
        raise err(
            "starts with a system turn, but the env's conversations start with the "
            "instruction as a user turn (instruction, OK, [example], task): remove it"
        )
    if len(turns) < 4 or turns[0].role != "user" or turns[1].role != "assistant":
        raise err(
            "must start with the instruction (user), its acknowledgement (assistant, 'OK'), "
            "the task (user) and an action (assistant)"
        )
    turns = with_example(turns, example)
    start = build_prompt(turns[0].content, turns[task_turn(len(example))].content, example)
    if turns[: len(start)] != start or len(turns) == len(start):
        raise err(
            "does not continue its prompt (instruction, OK, [example], task) with an action "
            "(an assistant turn)"
        )
    return replace(traj, turns=turns), len(start)


def align_experts(
    handle: EnvHandle, experts: Sequence[Trajectory], source: str | Path
) -> tuple[list[Trajectory], list[int]]:
    """Every record with the handle's conversation start, and each one's start length."""
    out, starts, inserted = [], [], 0
    known = set(handle.task_ids)
    for index, traj in enumerate(experts):

        def err(problem: str, field: str = "conversations") -> DataFileError:
            return DataFileError(source, problem, index, traj.id, field)  # noqa: B023

        task_id = handle.task_of(traj)
        if task_id not in known:
            key = handle.spec.task_key if handle.spec is not None else "id"
            field = key if key in traj.meta else "id"
            raise err(
                f"task {task_id!r} is not a task of the {handle.name} {handle.split} split (IPR "
                "replays expert records in the env's tasks: use data.train_file=env:expert, or "
                f"a file whose records name their task in {key!r})",
                field,
            )
        aligned, n_start = _aligned(traj, list(handle.example_for(task_id) or []), err)
        inserted += len(aligned.turns) != len(traj.turns)
        try:
            Dialogue.of(aligned.turns, n_start)
        except ValueError as exc:
            raise err(str(exc)) from None
        out.append(aligned)
        starts.append(n_start)
    if inserted:
        log.info("%s: inserted the in-context example into %d records", source, inserted)
    return out, starts


def expert_tasks(
    handle: EnvHandle,
    experts: Sequence[Trajectory],
    source: str | Path = "expert data",
    progress: bool = False,
) -> list[ExpertTask]:
    """One IPR task per task id (the first record of each), in record order (see above)."""
    aligned, starts = align_experts(handle, experts, source)
    firsts: dict[str, tuple[Trajectory, int]] = {}
    for traj, n_start in zip(aligned, starts, strict=True):
        firsts.setdefault(handle.task_of(traj), (traj, n_start))
    if len(firsts) < len(aligned):
        log.warning(
            "%s: %d records repeat a task; IPR explores each task once, along its first record "
            "(all records still train SFT)",
            source,
            len(aligned) - len(firsts),
        )
    tasks = [
        ExpertTask(task_id, Dialogue.of(traj.turns, n), traj.reward)
        for task_id, (traj, n) in firsts.items()
    ]
    return _with_rewards(handle, tasks, progress)


def _with_rewards(handle: EnvHandle, tasks: list[ExpertTask], progress: bool) -> list[ExpertTask]:
    """Tasks whose record has no reward get the reward of their actions replayed in the env."""
    missing = [i for i, t in enumerate(tasks) if t.reward is None]
    if not missing:
        return tasks
    env = handle.make_env()
    try:
        for i in tqdm(missing, desc="expert rewards", disable=not progress, leave=False):
            task = tasks[i]
            episode = replay(
                env, EpisodeSpec(task.task_id, tuple(task.actions)), handle.build_start
            )
            tasks[i] = replace(task, reward=float(episode.reward))
    finally:
        env.close()
    log.info("measured the final reward of %d expert records without one", len(missing))
    return tasks
