"""ALFWorld on the real engine: the IPR/ETO prompt, the environment, expert trajectories.

`AlfworldEnv(data_root, split)` plays `<data_root>/json_2.1.1/<split>/<task>/<trial>/
game.tw-pddl`: the official data (`$ALFWORLD_DATA`) or `alfworld_games` output, one code
path. Task ids are game paths relative to data_root; `reset` loads exactly that game
(exploration replays expert prefixes in a chosen game), reusing the engine. As in IPR, the
first observation is the room plus "Your task is to: ..." (no TextWorld banner); reward 1.0
when won, which ends the episode. Actions match case/whitespace-insensitively in either
vintage (`put X in/on Y` / `move X to Y`, mapped to the loaded game's grammar); anything
else gives "Nothing happens.".

`expert_trajectory` plays ALFWorld's handcoded expert through `AlfworldEnv` (every action
really runs), each action with a short rationale (`Narrator`), in the paper's ShareGPT shape
and `put ... in/on` vintage (`ipr-data alfworld trajectories --data DIR --out FILE.json`).
"""

from __future__ import annotations

import random
import zlib
from pathlib import Path
from typing import Any

from ipr_lightning.data.records import Trajectory, Turn
from ipr_lightning.envs.alfworld.engine import (
    SPLITS,
    TASK_TYPES,
    ExpertTracker,
    GameEngine,
    acquire_engine,
    convert_action,
    intro_observation,
    list_games,
    release_engine,
    split_dir,
    task_type_of,
)
from ipr_lightning.envs.base import TextEnv, example_turns, record_episode

# The method's ALFWorld instruction, verbatim (typos included) from ETO's
# eval_agent/prompt/instructions/alfworld_inst.txt (Yifan-Song793/ETO, commit a2fc5da, the
# revision with "take"); IPR's eval_agent/configs/task/alfworld.json loads that same file.
# Note: it lists `toggle {obj} {recep}`, while the engine's lamp command is `use {obj}`.
INSTRUCTION = (
    "Interact with a household to solve a task. Imagine you are an intelligent agent in a "
    "household environment and your target is to perform actions to complete the task goal. At "
    "the beginning of your interactions, you will be given the detailed description of the "
    "current environment and your goal to accomplish. \nFor each of your turn, you will be "
    "given the observation of the last turn. You should first think about the current condition "
    "and plan for your future actions, and then output your action in this turn. Your output "
    'must strictly follow this format:"Thought: your thoughts.\\nAction: your next action".\n\n'
    "The available actions are:\n1. go to {recep}\n2. take {obj} from {recep}\n"
    "3. put {obj} in/on {recep}\n4. open {recep}\n5. close {recep}\n6. toggle {obj} {recep}\n"
    "7. clean {obj} with {recep}\n8. heat {obj} with {recep}\n9. cool {obj} with {recep}\n"
    "where {obj} and {recep} correspond to objects and receptacles.\nAfter your each turn, the "
    "environment will give you immediate feedback based on which you plan your next few steps. "
    'if the envrionment output "Nothing happened", that means the previous action is invalid '
    "and you should try more options.\n\nYour response should use the following format:\n\n"
    "Thought: <your thoughts>\nAction: <your next action>"
)
ACTION_STYLES = ("auto", "move", "put")


class AlfworldEnv(TextEnv):
    """The real ALFWorld engine behind the `TextEnv` protocol (see the module docstring).

    action_style: the engine's vintage; "auto" reads it from each loaded game's grammar
    (0.4.x `move X to Y`, 0.3.x `put X in/on Y`). expert=True adds the handcoded expert's next
    command (engine vintage) as `info["expert_plan"]` after reset and every step.
    """

    instruction = INSTRUCTION

    def __init__(
        self,
        data_root: str | Path,
        split: str = "train",
        max_turns: int = 20,
        action_style: str = "auto",
        *,
        expert: bool = False,
    ) -> None:
        super().__init__()
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if action_style not in ACTION_STYLES:
            raise ValueError(f"action_style must be one of {ACTION_STYLES}")
        self.data_root, self.split, self.max_turns = Path(data_root), split, max_turns
        self.action_style, self.expert = action_style, expert
        self._split_dir = split_dir(data_root, split)
        self._ids: list[str] | None = None
        self._engine: GameEngine | None = None  # taken when a game is first played
        self._tracker = ExpertTracker() if expert else None
        self._examples: dict[str, list[Turn]] = {}

    def task_ids(self) -> list[str]:
        if self._ids is None:
            self._ids = list_games(self.data_root, self._split_dir)
        return list(self._ids)

    def game_path(self, task_id: str) -> Path:
        path = self.data_root / task_id
        if not path.is_file():
            raise KeyError(f"no ALFWorld game {task_id!r} under {self.data_root}")
        return path

    @property
    def engine_style(self) -> str:
        if self.action_style != "auto":
            return self.action_style
        return "put" if self.engine.put_template.startswith("put") else "move"

    @property
    def engine(self) -> GameEngine:
        if self._engine is None:  # facts feed the expert's predicates
            self._engine = acquire_engine(self.expert)
        return self._engine

    def close(self) -> None:
        """Hand the game engine back to the process's idle ones (see `acquire_engine`)."""
        if self._engine is not None:
            release_engine(self._engine)
            self._engine = None

    def _reset(self, task_id: str) -> tuple[str, dict[str, Any]]:
        path = self.game_path(task_id)
        self.engine.load(path)
        state = self.engine.reset()
        info: dict[str, Any] = {
            "won": False,
            "game_file": task_id,
            "task_type": task_type_of(task_id),
        }
        if self._tracker is not None:
            self._tracker.reset(str(path), state, task_id)
            info["expert_plan"] = list(self._tracker.plan)
        return intro_observation(state["feedback"]), info

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        command = convert_action(action, self.engine_style)
        state = self.engine.step(command)
        won = bool(state["won"])
        info: dict[str, Any] = {"won": won, "command": command}
        if self._tracker is not None:
            self._tracker.update(state, command)
            info["expert_plan"] = list(self._tracker.plan)
        return state["feedback"], float(won), won, info

    def example_for(self, task_type: str) -> list[Turn]:
        """An in-context example for `task_type` (off unless passed to `build_prompt`): the
        expert trajectory of the first *training* game of that type (never an evaluation
        game), without the instruction/OK start: task, then actions and observations."""
        if task_type not in TASK_TYPES:
            raise ValueError(f"unknown ALFWorld task type {task_type!r}")
        if task_type not in self._examples:
            train = self if self.split == "train" else AlfworldEnv(self.data_root, "train")
            game = next((g for g in train.task_ids() if task_type_of(g) == task_type), None)
            if game is None:
                raise LookupError(f"no {task_type} game in the training split")
            traj = expert_trajectory(AlfworldEnv(self.data_root, "train", expert=True), game)
            self._examples[task_type] = example_turns(traj)
        return list(self._examples[task_type])


IN_RECEPTACLES = tuple(
    "bathtubbasin cabinet coffeemachine drawer fridge garbagecan laundryhamper microwave safe "
    "sinkbasin toaster".split()
)
LAMP_PLACES = ("desk", "sidetable", "dresser", "shelf")
TOOLS = {"clean": "sinkbasin", "heat": "microwave", "cool": "fridge"}


def _change(task_type: str) -> str:
    """ "clean" / "heat" / "cool" for the state-change tasks, else ""."""
    verb = task_type.split("_")[1]
    return verb if verb in TOOLS and task_type.startswith("pick_") else ""


def _a(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _prep(recep: str) -> str:
    return "in" if recep.split()[0] in IN_RECEPTACLES else "on"


def _places(receptacles: list[str], classes: list[str], first: str) -> str:
    """ "countertop (1-3), cabinet (1, 4)": the given classes present, `first`'s class first."""
    order = sorted(classes, key=lambda c: (c != first.split()[0], classes.index(c)))
    parts = []
    for cls in order:
        nums = sorted(int(r.split()[1]) for r in receptacles if r.split()[0] == cls)
        contiguous = len(nums) > 1 and nums == list(range(1, len(nums) + 1))
        parts += [f"{cls} ({f'1-{nums[-1]}' if contiguous else ', '.join(map(str, nums))})"] * (
            len(nums) > 0
        )
    return ", ".join(parts)


class Narrator:
    """Writes the *why* of each expert action from the task, the goal objects and what the
    observations so far show; claims about the scene are checked against those observations
    (otherwise a neutral phrasing is used)."""

    def __init__(self, game_file: Path, first_obs: str, game_id: str) -> None:
        import json

        from alfworld.gen.constants import VAL_RECEPTACLE_OBJECTS

        traj = json.loads((game_file.parent / "traj_data.json").read_text(encoding="utf-8"))
        params, self.task_type = traj["pddl_params"], traj["task_type"]
        self.obj = params["object_target"].lower()
        self.parent = params["parent_target"].lower()
        self.toggle = params["toggle_target"].lower()
        room = first_obs.split("you see ", 1)[-1].split("\n")[0].rstrip(".")
        self.receptacles = [
            r.strip().split(" ", 1)[1]
            for r in room.replace(", and ", ", ").split(", ")
            if r.strip()
        ]
        classes = [
            c for c, objs in VAL_RECEPTACLE_OBJECTS.items() if params["object_target"] in objs
        ]
        self.likely = [c.lower() for c in sorted(classes)]
        self.holding: str | None = None
        self.placed, self.changed, self.steps = 0, False, 0
        self.at, self.last_obs, self.last_done, self.prev_verb = "", first_obs, "", ""
        self.seen_at: dict[str, str] = {}
        self.rng = random.Random(zlib.crc32(game_id.encode()))

    def _pick(self, *options: str) -> str:
        return options[self.rng.randrange(len(options))]

    def _search_start(self, target: str, thing: str, likely: list[str]) -> str:
        classes = [r.split()[0] for r in self.receptacles]
        known = [c for c in dict.fromkeys(classes) if c in likely]
        if target.split()[0] not in known:
            return f"First I need to find {_a(thing)}. I will start with {target}."
        return (
            f"First I need to find {_a(thing)}. {_a(thing).capitalize()} is more likely "
            f"to appear in {_places(self.receptacles, known, target)}. I can check one by "
            f"one, starting with {target}."
        )

    def plan(self) -> str:
        o, p = self.obj, f"{_prep(self.parent or 'table')} {self.parent}"
        if self.task_type == "pick_two_obj_and_place":
            return (
                f"To solve the task, I need to find and take the first {o}, then put it {p},"
                f" then find and take the second {o}, then put it {p}."
            )
        if self.task_type == "look_at_obj_in_light":
            return (
                f"To solve the task, I need to find and take {_a(o)}, then find and use "
                f"{_a(self.toggle)}."
            )
        verb = _change(self.task_type)
        middle = f", then {verb} it with {TOOLS[verb]}" if verb else ""
        return f"To solve the task, I need to find and take {_a(o)}{middle}, then put it {p}."

    def wanted(self) -> str:
        """What the agent is looking for now: the object, the lamp, or the goal receptacle."""
        if not self._holds_target():
            return self.obj
        return self.toggle if self.task_type == "look_at_obj_in_light" else self.parent

    def _holds_target(self) -> bool:
        return bool(self.holding) and self.holding.split()[0] == self.obj

    def _saw(self, thing: str, recep: str) -> bool:
        import re

        return re.search(rf"\b{re.escape(thing)}\b", self.seen_at.get(recep, "")) is not None

    def _lead(self) -> str:
        """What the last action achieved, as the opening of the next thought."""
        done, num = self.last_done, (self.holding or " ?").split()[-1]
        if done == "take":
            return f"Now I take {_a(self.obj)} ({num})."
        if done in ("heat", "cool", "clean"):
            return f"Now I {done} the {self.obj} ({num})."
        if done == "place":
            return f"Now I put the first {self.obj} {_prep(self.at)} {self.at}."
        return ""

    def _go(self, target: str) -> str:
        o, held = self.obj, self.holding
        if self.steps == 0:
            return f"{self.plan()} {self._search_start(target, o, self.likely)}"
        if held and not self._holds_target():
            return f"I do not need the {held}. I will take it back to {target}."
        if self._holds_target() and _change(self.task_type) and not self.changed:
            lead = self._lead() or f"I am carrying the {held}."
            return f"{lead} Next, I need to go to {target} and {_change(self.task_type)} it."
        lead = self._lead()
        wanted = self.wanted()
        if self._holds_target() and wanted == self.toggle and self.last_done == "take":
            return (
                f"{lead} Next, I need to find {_a(wanted)}. "
                + self._search_start(target, wanted, list(LAMP_PLACES)).split(". ", 1)[1]
            )
        if self._holds_target() and wanted == self.parent and target.split()[0] == wanted:
            return f"{lead} Next, I need to put it {_prep(target)} {target}.".strip()
        if self.last_done == "place":
            return f"{lead} Next, I need to find the second {o}. I will check {target}."
        if self.prev_verb == "close" and not self._holds_target():  # the close said why
            return self._pick(f"Next, I will check {target}.", f"I will go to {target} next.")
        if self.at and not self._saw(wanted, self.at):
            return self._pick(
                f"There is no {wanted} {_prep(self.at)} {self.at}. Next, I will check {target}.",
                f"I don't see {_a(wanted)} {_prep(self.at)} {self.at}. I will try {target} next.",
            )
        return f"{lead} I still need to find {_a(wanted)}. Next, I will check {target}.".strip()

    def _open(self, recep: str) -> str:
        closed = f"The {recep} is closed." if f"The {recep} is closed." in self.last_obs else ""
        if self._holds_target() and recep.split()[0] == self.wanted():
            why = f"I need to open it before I put the {self.holding} in it."
        else:
            why = f"I need to open it to check if there is {_a(self.wanted())} inside."
        return f"{closed} {why}".strip()

    def _take(self, item: str, recep: str) -> str:
        if item.split()[0] != self.obj or not self._saw(item, recep):
            return f"I will take the {item} from the {recep}."
        which = "the second" if self.placed else _a(self.obj).split()[0]
        return self._pick(
            f"Now I find {which} {self.obj} ({item.split()[1]}). Next, I need to take it.",
            f"There is {_a(self.obj)} here, the {item}. I will pick it up.",
        )

    def _put(self, item: str, recep: str) -> str:
        if item.split()[0] != self.obj:
            return f"I do not need the {item}, so I put it back {_prep(recep)} the {recep}."
        then = (
            f" Then I need to find the second {self.obj}."
            if (self.task_type == "pick_two_obj_and_place" and not self.placed)
            else ""
        )
        return self._pick(
            f"Now I am at the {recep} with the {item}. I put it {_prep(recep)} the {recep}.{then}",
            f"I have the {item} and I am at the {recep}, so I put it {_prep(recep)}.{then}",
        )

    def thought(self, action: str) -> str:
        """Why the expert takes `action` (written in the put vintage) now."""
        import re

        verb, _, rest = action.partition(" ")
        if verb == "go":
            return self._go(rest[3:])
        if verb == "open":
            return self._open(rest)
        if verb == "close":
            absent = not (
                self._holds_target() or self.last_done == "place" or self._saw(self.obj, rest)
            )
            why = f"There is no {self.obj} in the {rest}. " if absent else ""
            return f"{why}I close the {rest} before moving on."
        if verb == "take" and (m := re.match(r"(.+?) from (.+)$", rest)):
            return self._take(m[1], m[2])
        if verb == "put" and (m := re.match(r"(.+?) in/on (.+)$", rest)):
            return self._put(m[1], m[2])
        if verb in ("heat", "cool", "clean") and (m := re.match(r"(.+?) with (.+)$", rest)):
            return f"I am at the {m[2]} holding the {m[1]}. I will {verb} it with the {m[2]}."
        if verb == "use":
            if self.toggle and rest.split()[0] == self.toggle and self._saw(rest, self.at):
                return f"Now I find {_a(self.toggle)} ({rest.split()[1]}). Next, I need to use it."
            return f"I will use the {rest}."
        return {
            "look": "I will look around to see where I am.",
            "inventory": "Let me check what I am carrying.",
            "examine": f"I will examine the {rest} to see what is there.",
            "help": "Let me check which commands are available.",
        }.get(verb, "I will try another action.")

    def observe(self, action: str, obs: str) -> None:
        """Update what the agent holds, has done and has seen after `action` gave `obs`."""
        self.steps += 1
        self.prev_verb, self.last_obs = action.split()[0], obs
        if self.prev_verb != "close":  # closing up is bookkeeping: keep what was last achieved
            self.last_done = ""
        if obs.startswith("You arrive at "):
            self.at = action[6:]
        if obs.startswith(("You arrive at ", "You open the ")):
            self.seen_at[self.at] = obs
        if obs.startswith("You pick up the "):
            self.holding, self.last_done = " ".join(action.split()[1:3]), "take"
        elif obs.startswith(("You move the ", "You put the ")):
            if self._holds_target() and self.at.split()[0] == self.parent:
                self.placed, self.last_done = self.placed + 1, "place"
            self.holding = None
        elif obs.startswith(("You heat the ", "You cool the ", "You clean the ")):
            self.changed, self.last_done = True, action.split()[0]


class ExpertTooLong(RuntimeError):
    """The handcoded expert needs more than the env's max_turns for a game."""


def expert_trajectory(
    env: AlfworldEnv, game_id: str, style: str = "put", example: list[Turn] | None = None
) -> Trajectory:
    """Play the handcoded expert in `env` (made with expert=True): instruction, OK,
    [in-context example], task, then `Thought: <why>\\nAction: <command in style>` /
    `Observation: ...` turns."""
    narrator: Narrator | None = None
    last: list[str] = []

    def next_output(obs: str, info: dict[str, Any]) -> str | None:
        nonlocal narrator
        if narrator is None:  # the reset's observation: the game's start
            narrator = Narrator(env.game_path(game_id), obs, game_id)
        else:
            narrator.observe(last[-1], obs)
        if not info.get("expert_plan"):
            return None
        last.append(convert_action(info["expert_plan"][0], style))
        return f"Thought: {narrator.thought(last[-1])}\nAction: {last[-1]}"

    meta = {"game_file": game_id, "task_type": task_type_of(game_id), "env": "alfworld"}
    trajectory = record_episode(env, game_id, next_output, example, meta)
    if trajectory.reward < 1.0:
        raise ExpertTooLong(f"the expert did not win {game_id} within {env.max_turns} turns")
    return trajectory
