"""A deterministic toy household: "put an object in/on a receptacle", ALFWorld-flavoured.

Small enough to simulate in microseconds, rich enough to need search, opening closed
receptacles and carrying: a stand-in for fast tests and for the shipped demo data. The
environment is Gymnasium-shaped (`reset(*, seed, options) -> (obs, info)`,
`step(action) -> (obs, reward, terminated, truncated, info)`), reward 1 on success.

Regenerate the shipped demo file (it must not drift; a test compares):

    python -m ipr_lightning.envs.toy.env src/ipr_lightning/resources/demo_trajectories.json
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ipr_lightning.data.records import Trajectory, Turn
from ipr_lightning.envs.base import EnvHandle, TextEnv, example_turns, record_episode

if TYPE_CHECKING:
    from ipr_lightning.config import EnvConfig
    from ipr_lightning.envs.toy import ToyOptions

RECEPTACLES = (
    "cabinet 1",
    "countertop 1",
    "drawer 1",
    "drawer 2",
    "fridge 1",
    "shelf 1",
    "table 1",
    "box 1",
)
OPENABLE = frozenset({"cabinet 1", "drawer 1", "drawer 2", "fridge 1", "box 1"})
OBJECTS = ("apple", "book", "bowl", "cloth", "key", "mug", "pen", "remote")
INSTRUCTION = (
    "You are in a small house and must complete a household task by typing commands. "
    "Each turn, think briefly about the situation and then act, answering in exactly this "
    'format:\n"Thought: <your reasoning>\nAction: <one command>"\n'
    "Commands: go to {recep}; open {recep}; close {recep}; take {obj} from {recep}; "
    "put {obj} in/on {recep}; look; inventory. Use the exact names you see. "
    'A command that cannot be done gives "Nothing happens."'
)


@dataclass
class ToyTask:
    id: str
    target_object: str
    target_recep: str
    contents: dict[str, list[str]]
    closed: frozenset[str]


def make_task(index: int, seed: int = 0) -> ToyTask:
    """Task `index` of the family `seed`: a fixed placement of 3-5 objects."""
    rng = random.Random(seed * 1_000_003 + index)
    objects = rng.sample(OBJECTS, rng.randint(3, 5))
    contents: dict[str, list[str]] = {r: [] for r in RECEPTACLES}
    for obj in objects:
        contents[rng.choice(RECEPTACLES)].append(f"{obj} 1")
    target = objects[0]
    where = next(r for r, objs in contents.items() if f"{target} 1" in objs)
    goal = rng.choice([r for r in RECEPTACLES if r != where])
    closed = frozenset(r for r in sorted(OPENABLE) if rng.random() < 0.7)
    return ToyTask(f"toy-{seed}-{index}", target, goal, contents, closed)


def _prep(recep: str) -> str:
    return "on" if recep.split()[0] in ("countertop", "shelf", "table") else "in"


def _listing(items: list[str]) -> str:
    if not items:
        return "nothing"
    named = [f"{'an' if x[0] in 'aeiou' else 'a'} {x}" for x in items]
    return named[0] if len(named) == 1 else ", ".join(named[:-1]) + ", and " + named[-1]


class ToyEnv(TextEnv):
    instruction = INSTRUCTION

    def __init__(self, tasks: dict[str, ToyTask], max_turns: int = 20) -> None:
        super().__init__()
        self.tasks, self.max_turns = tasks, max_turns
        self._task: ToyTask | None = None
        self._contents: dict[str, list[str]] = {}
        self._closed: set[str] = set()
        self._at: str | None = None
        self._holding: str | None = None

    def task_ids(self) -> list[str]:
        return list(self.tasks)

    def _reset(self, task_id: str) -> tuple[str, dict[str, Any]]:
        if task_id not in self.tasks:
            raise KeyError(f"unknown toy task id {task_id!r}")
        task = self._task = self.tasks[task_id]
        self._contents = {r: list(objs) for r, objs in task.contents.items()}
        self._closed, self._at, self._holding = set(task.closed), None, None
        obs = (
            f"You are in the middle of a room. Looking quickly around you, you see "
            f"{_listing(list(RECEPTACLES))}.\nYour task is to: put a {task.target_object} "
            f"{_prep(task.target_recep)} {task.target_recep}."
        )
        return obs, {}

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        obs, won = self._apply(action.lower())
        return obs, float(won), won, {"won": won}

    def _apply(self, a: str) -> tuple[str, bool]:
        words = a.split()
        if a.startswith("go to ") and a[6:] in RECEPTACLES:
            self._at = a[6:]
            if self._at in self._closed:
                return f"You arrive at {self._at}. The {self._at} is closed.", False
            return (
                f"You arrive at {self._at}. On the {self._at}, you see "
                f"{_listing(self._contents[self._at])}.",
                False,
            )
        if words[:1] in (["open"], ["close"]) and a.split(" ", 1)[1:] == [self._at or ""]:
            if self._at not in OPENABLE:
                return "Nothing happens.", False
            if words[0] == "open" and self._at in self._closed:
                self._closed.discard(self._at)
                return (
                    f"You open the {self._at}. The {self._at} is open. In it, you see "
                    f"{_listing(self._contents[self._at])}.",
                    False,
                )
            if words[0] == "close" and self._at not in self._closed:
                self._closed.add(self._at)
                return f"You close the {self._at}.", False
            return "Nothing happens.", False
        if a.startswith("take ") and " from " in a and self._holding is None:
            obj, recep = a[5:].split(" from ", 1)
            if recep == self._at and recep not in self._closed and obj in self._contents[recep]:
                self._contents[recep].remove(obj)
                self._holding = obj
                return f"You pick up the {obj} from the {recep}.", False
            return "Nothing happens.", False
        if a.startswith("put ") and " in/on " in a:
            obj, recep = a[4:].split(" in/on ", 1)
            if obj == self._holding and recep == self._at and recep not in self._closed:
                self._contents[recep].append(obj)
                self._holding = None
                task = self._task
                assert task is not None
                won = obj == f"{task.target_object} 1" and recep == task.target_recep
                return f"You put the {obj} {_prep(recep)} the {recep}.", won
            return "Nothing happens.", False
        if a == "inventory":
            return (
                f"You are carrying: a {self._holding}."
                if self._holding
                else "You are not carrying anything."
            ), False
        if a == "look":
            where = f"facing the {self._at}" if self._at else "in the middle of a room"
            return f"You are {where}. Next to it, you see nothing.", False
        return "Nothing happens.", False


def expert_actions(task: ToyTask) -> list[tuple[str, str]]:
    """(thought, action) pairs: search the likely places in order, then carry and place."""
    obj, goal = task.target_object, task.target_recep
    where = next(r for r, objs in task.contents.items() if f"{obj} 1" in objs)
    steps: list[tuple[str, str]] = []
    # Look first in a plausible wrong place for half of the tasks, like a real search would.
    decoy = next((r for r in RECEPTACLES if r not in (where, goal)), None)
    order = [decoy, where] if decoy and int(task.id.rsplit("-", 1)[1]) % 2 else [where]
    for i, recep in enumerate(order):
        found = recep == where
        think = (
            f"To solve the task, I need to find a {obj}, then put it {_prep(goal)} {goal}. "
            f"A {obj} could be in {recep}."
            if i == 0
            else f"There is no {obj} there. I will check {recep} next."
        )
        steps.append((think, f"go to {recep}"))
        if recep in task.closed:
            steps.append((f"The {recep} is closed, so I open it to see inside.", f"open {recep}"))
        if not found:
            continue
        steps.append((f"Now I see a {obj} 1. I take it.", f"take {obj} 1 from {recep}"))
    steps.append(
        (f"Now I have the {obj} 1. Next, I need to put it {_prep(goal)} {goal}.", f"go to {goal}")
    )
    if goal in task.closed:
        steps.append((f"The {goal} is closed. I open it first.", f"open {goal}"))
    steps.append((f"I am at {goal}. I put the {obj} 1 there.", f"put {obj} 1 in/on {goal}"))
    return steps


def expert_trajectory(env: ToyEnv, task: ToyTask, example: list[Turn] | None = None) -> Trajectory:
    """Play the expert in the env; the observations in the record come from the simulation."""
    steps = iter(expert_actions(task))

    def next_output(obs: str, info: dict[str, Any]) -> str | None:
        step = next(steps, None)
        return None if step is None else f"Thought: {step[0]}\nAction: {step[1]}"

    return record_episode(env, task.id, next_output, example, {"env": "toy"})


SPLIT_SEEDS = {"train": 0, "valid_seen": 1, "valid_unseen": 2}


def build_toy(cfg: EnvConfig, split: str) -> EnvHandle:
    """The toy env's handle for one split (registered in `envs/toy/__init__.py`)."""
    opts: ToyOptions = cfg.options
    n = {"train": opts.n_train, "valid_seen": opts.n_valid_seen}.get(split, opts.n_valid_unseen)
    tasks = {t.id: t for t in (make_task(i, SPLIT_SEEDS[split]) for i in range(n))}

    def make_env() -> ToyEnv:
        return ToyEnv(tasks, cfg.max_turns)

    example: list[Turn] | None = None
    if cfg.in_context_example:  # always a train task: never leak an evaluation task
        train_task = make_task(0, SPLIT_SEEDS["train"])
        example = example_turns(expert_trajectory(ToyEnv({train_task.id: train_task}), train_task))

    def expert() -> list[Trajectory]:
        env = make_env()
        return [expert_trajectory(env, task, example) for task in tasks.values()]

    return EnvHandle("toy", split, make_env, list(tasks), expert, lambda task_id: example)


def demo_trajectories(n: int = 64, seed: int = 0) -> list[Trajectory]:
    tasks = [make_task(i, seed) for i in range(n)]
    env = ToyEnv({t.id: t for t in tasks})
    return [expert_trajectory(env, t) for t in tasks]


if __name__ == "__main__":
    from ipr_lightning.data.io import write_trajectories

    write_trajectories(sys.argv[1], demo_trajectories())
    print(f"wrote {sys.argv[1]}")
