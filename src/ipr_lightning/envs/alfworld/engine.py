"""The real ALFWorld text engine (TextWorld + PDDL) one chosen game at a time, made fast.

`GameEngine` wraps the unmodified `textworld.envs.PddlEnv` with ALFWorld's own
`AlfredDemangler` (object ids -> "cabinet 1" names), as `AlfredTWEnv` does, but loads and
resets a *chosen* game file instead of cycling through a gym batch. `install_engine_caches`
removes repeated work without changing what the engine computes (a test replays games against
an uncached engine and compares every observation):

* TextWorld re-parses every command template and grammar query with TatSu on every step:
  memoised (results deep-copied, as text generation mutates them); its context copies no
  longer deep-copy entity infos it only reads.
* `fast_downward.pddl2sas` runs twice per `load` and twice per `reset`: memoised per
  (domain, problem), and the planner-only "optimised" translation reuses the plain one.
* A game file carries the whole grammar with its goal sentence: the grammar is parsed once
  per template and only the one-line `task` rule is swapped per game.

`ExpertTracker` runs ALFWorld's handcoded expert (`HandCodedTWAgent`) alongside an episode,
like `AlfredExpert`, with its own seeded random stream (deterministic plans, caller's `random`
untouched), without `AlfredExpert`'s uninformative opening `look`, and with the executed
`move X to Y` reported to it as `put X in/on Y`: its bookkeeping looks for "put" (0.3.x
vintage), so under 0.4.2's `move` it never registers a placed object and fails every
pick-two task.

Also here: the put/move action vintages, and the official game-folder listing. TextWorld and
ALFWorld are imported lazily (`pip install alfworld==0.4.2`).
"""

from __future__ import annotations

import copy
import functools
import json
import random
import re
import sys
import threading
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

BANNER = "-= Welcome to TextWorld, ALFRED! =-"
TASK_RULE_RE = re.compile(r'"rhs":\s*"Your task is to: ((?:[^"\\]|\\.)*)"')
TASK_TYPES = (
    "pick_and_place_simple",
    "pick_two_obj_and_place",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
)
SPLITS = ("train", "valid_seen", "valid_unseen")  # the official json_2.1.1 split folders
PUT_RE = re.compile(r"^put (.+?) in/on (.+)$")
MOVE_RE = re.compile(r"^move (.+?) to (.+)$")
_INSTALLED = False


def normalize_action(action: str) -> str:
    """Engine names are lower-case single-spaced: match case- and whitespace-insensitively."""
    return " ".join(action.lower().split())


def convert_action(action: str, style: str) -> str:
    """The action in `style` "move" (alfworld 0.4.x: `move X to Y`) or "put" (0.3.x and the
    paper's data: `put X in/on Y`); other commands are only normalised."""
    action = normalize_action(action)
    if style == "move" and (m := PUT_RE.match(action)):
        return f"move {m[1]} to {m[2]}"
    if style == "put" and (m := MOVE_RE.match(action)):
        return f"put {m[1]} in/on {m[2]}"
    return action


def task_type_of(game_id: str) -> str:
    """Task type from the official folder name `<task_type>-<Obj>-<Mrecep>-<Recep>-<scene>`."""
    for part in reversed(Path(game_id).parts):
        head = part.split("-", 1)[0]
        if head in TASK_TYPES:
            return head
    return ""


def split_dir(data_root: str | Path, split: str) -> Path:
    """`<root>/json_2.1.1/<split>` (or `<root>/<split>` when root is json_2.1.1 itself)."""
    root = Path(data_root)
    for candidate in (root / "json_2.1.1" / split, root / split):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no ALFWorld split folder {root / 'json_2.1.1' / split}")


def list_games(data_root: Path, split_dir: Path) -> list[str]:
    """Game ids (paths relative to data_root, sorted) the way `AlfredTWEnv` collects them:
    folders with traj_data.json and game.tw-pddl, one of the six task types, marked
    `"solvable": true`, skipping paths containing `movable` or `Sliced` (checked on the path
    below data_root, so a data_root that happens to contain those words still works)."""
    solvable = re.compile(r'"solvable"\s*:\s*true')
    games = []
    for game in sorted(split_dir.rglob("game.tw-pddl")):
        rel = game.relative_to(data_root).as_posix()
        if "movable" in rel or "Sliced" in rel or not (game.parent / "traj_data.json").is_file():
            continue
        if task_type_of(rel) and solvable.search(game.read_text(encoding="utf-8")):
            games.append(rel)
    return games


def require_alfworld() -> None:
    """Fail with the install command when the engine is missing."""
    try:
        import alfworld  # noqa: F401
        import textworld  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "ALFWorld needs the real engine: pip install 'ipr-lightning[alfworld]' "
            "(alfworld==0.4.2)"
        ) from exc


def _memoised_parse(parse: Any) -> Any:
    """A TatSu parse-and-convert function, memoised; results are deep-copied because the
    grammar engine mutates the symbols it derives."""

    @functools.lru_cache(maxsize=4096)
    def parsed(text: str, rule_name: str | None) -> Any:
        return parse(text, rule_name=rule_name)

    def cached(text: str, rule_name: str | None = None, **kwargs: Any) -> Any:
        if any(kwargs.values()):  # trace=True (TW_CSG_TRACE debugging): TatSu's own output
            return parse(text, rule_name=rule_name, **kwargs)
        return copy.deepcopy(parsed(text, rule_name))

    return cached


def _copy_context(context: dict[str, Any]) -> dict[str, Any]:
    """textgen.copy_context without deep-copying entity infos and placeholder mappings: text
    generation updates only the copied dicts, never the objects inside them."""
    return {
        "state": context["state"],
        "facts": context["facts"],
        "variables": dict(context["variables"]),
        "mapping": dict(context["mapping"]),
        "entity_infos": context["entity_infos"],
    }


def install_engine_caches() -> None:
    """Memoise TextWorld's TatSu grammar parsing and fast-downward's PDDL translation.

    Both are pure functions of their text arguments; the engine's results are unchanged (a
    test compares observations against an uncached engine). Idempotent, process-wide.
    """
    global _INSTALLED
    if _INSTALLED:
        return
    import fast_downward
    import textworld.logic as tw_logic
    from textworld.envs.pddl import logic as pddl_logic
    from textworld.envs.pddl import textgen

    textgen._parse_and_convert = _memoised_parse(textgen._parse_and_convert)
    tw_logic._parse_and_convert = _memoised_parse(tw_logic._parse_and_convert)
    textgen.copy_context = _copy_context
    translate = fast_downward.pddl2sas

    @functools.lru_cache(maxsize=64)
    def plain_translate(domain: str, problem: str, verbose: bool) -> Any:
        argv = list(sys.argv)  # pddl2sas overwrites sys.argv for its option parser
        try:
            return translate(domain, problem, verbose=verbose)
        finally:
            sys.argv[:] = argv

    def cached_translate(
        domain: str, problem: str, verbose: bool = False, optimize: bool = False
    ) -> Any:
        # PddlState translates twice: plainly (to play) and optimised (only for the planner
        # expert's replanning, unused here). The plain SAS encodes the same task, so it serves
        # both and the second translation (half of a load) is skipped.
        return plain_translate(domain, problem, verbose)

    class _FastDownward:  # stands in for the module inside textworld's PDDL logic only
        def __getattr__(self, name: str) -> Any:
            return getattr(fast_downward, name)

        pddl2sas = staticmethod(cached_translate)

    pddl_logic.fast_downward = _FastDownward()
    _INSTALLED = True


@functools.lru_cache(maxsize=8)
def _template_logic(domain: str, template: str) -> Any:
    from textworld.envs.pddl.logic import GameLogic

    return GameLogic(domain=domain, grammar=template)


def game_logic(domain: str, grammar: str) -> Any:
    """The parsed game logic of (domain, grammar), parsing the shared grammar only once."""
    from textworld.envs.pddl.logic import GameLogic
    from textworld.envs.pddl.textgen import ContextSensitiveGrammar
    from textworld.logic import TypeHierarchy

    match = TASK_RULE_RE.search(grammar)
    if match is None:  # an unfamiliar grammar: parse it whole
        return GameLogic(domain=domain, grammar=grammar)
    template = grammar[: match.start(1)] + "UNKNOWN GOAL." + grammar[match.end(1) :]
    shared = _template_logic(domain, template)
    task_rule = json.dumps(
        {"task": [{"rhs": "Your task is to: " + json.loads('"' + match.group(1) + '"')}]}
    )
    logic = GameLogic.__new__(GameLogic)
    logic.domain, logic.actions, logic.types = domain, shared.actions, TypeHierarchy()
    logic.grammar = ContextSensitiveGrammar()
    # _rules is the grammar's only state; copy the lists so the shared template stays intact.
    logic.grammar._rules = defaultdict(list, {k: list(v) for k, v in shared.grammar._rules.items()})
    logic.grammar._rules["task"] = ContextSensitiveGrammar.parse(task_rule)._rules["task"]
    return logic


def _engine_class() -> type:
    from textworld.envs import PddlEnv
    from textworld.envs.pddl import logic as pddl_logic

    class CachedPddlEnv(PddlEnv):
        """`PddlEnv` whose `load` reuses the parsed grammar (see `game_logic`)."""

        def load(self, filename_or_data: str) -> None:
            with open(filename_or_data, encoding="utf-8") as f:
                data = json.load(f)
            self._game_file, self._game_data = filename_or_data, data
            self.walkthrough = data.get("walkthrough")
            self._logic = game_logic(data["pddl_domain"], data["grammar"])
            self._pddl_state = pddl_logic.PddlState(
                self.downward_lib, data["pddl_problem"], self._logic
            )
            self._entity_infos = self._get_entity_infos()

    return CachedPddlEnv


class GameEngine:
    """One TextWorld PDDL engine (with its own fast-downward library copy), reusable across
    games: `load(path)` only when the game changes, `reset()` per episode."""

    def __init__(self, facts: bool = False) -> None:
        require_alfworld()
        import textworld
        from alfworld.agents.environment.alfred_tw_env import AlfredDemangler

        install_engine_caches()
        self.facts = facts
        infos = textworld.EnvInfos(won=True, admissible_commands=True, facts=facts)
        self._env = AlfredDemangler(_engine_class()(infos), shuffle=False)
        self.game_file: str | None = None
        self.put_template = "move {o} to {r}"
        self.state: Any = None

    def load(self, game_file: str | Path) -> None:
        game_file = str(game_file)
        if game_file != self.game_file:
            self._env.load(game_file)
            self.game_file = game_file
            actions = self._env.unwrapped._logic.actions
            self.put_template = actions["putobject"].template if "putobject" in actions else ""

    def reset(self) -> Any:
        self.state = self._env.reset()
        return self.state

    def step(self, command: str) -> Any:
        self.state, _, _ = self._env.step(command)
        return self.state


_IDLE: dict[bool, list[GameEngine]] = {False: [], True: []}
_IDLE_LOCK = threading.Lock()


def acquire_engine(facts: bool = False) -> GameEngine:
    """An idle engine of this process, else a new one.

    Every engine loads its own copy of fast-downward's library (34 MB; TextWorld copies it
    to a temporary folder and deletes the file, and ctypes never unloads it), so each one
    keeps 34 MB of the temporary disk taken until the process ends. Reusing released engines
    bounds that by the most environments ever live at once; making one per environment let a
    3-seed `ipr-bench` fill the disk (every evaluation and exploration builds up to 64)."""
    with _IDLE_LOCK:
        idle = _IDLE[facts]
        if idle:
            return idle.pop()
    return GameEngine(facts=facts)


def release_engine(engine: GameEngine) -> None:
    """Hand an engine back for the next `acquire_engine` (its game stays loaded)."""
    with _IDLE_LOCK:
        _IDLE[engine.facts].append(engine)


def intro_observation(feedback: str) -> str:
    """The first observation as IPR/ETO show it: the banner dropped, room and task joined by
    one newline (`"\\n".join(obs.split("\\n\\n")[1:])` in their code)."""
    parts = feedback.split("\n\n")
    if parts and parts[0].strip() == BANNER:
        parts = parts[1:]
    return "\n".join(p.strip() for p in parts if p.strip())


class ExpertTracker:
    """ALFWorld's handcoded expert following an episode; `plan` is its next command."""

    def __init__(self) -> None:
        self.plan: list[str] = []
        self._agent: Any = None
        self._rng_state: Any = None

    def _act(self, state: Any, last_command: str) -> None:
        from alfworld.agents.expert import HandCodedAgentFailed, HandCodedAgentTimeout

        saved = random.getstate()  # the expert draws from the global `random`
        random.setstate(self._rng_state)
        try:
            action = self._agent.act(state, 0, state["won"], last_command)
            self.plan = [action] if action in state["admissible_commands"] else ["look"]
        except (HandCodedAgentFailed, HandCodedAgentTimeout):
            self.plan = []
        finally:
            self._rng_state = random.getstate()
            random.setstate(saved)

    def reset(self, game_file: str, state: Any, seed_key: str) -> None:
        from alfworld.agents.expert import HandCodedTWAgent

        self._agent = HandCodedTWAgent(max_steps=200)
        self._agent.reset(game_file)
        self._agent.observe(state["feedback"])
        self._rng_state = random.Random(zlib.crc32(seed_key.encode())).getstate()
        self._act(state, "")

    def update(self, state: Any, command: str) -> None:
        if self._agent is not None:
            self._act(state, convert_action(command, "put"))


def expert_wins(
    engine: GameEngine, game_file: str | Path, seed_key: str, max_steps: int
) -> list[str] | None:
    """Play the handcoded expert directly in the engine: its commands if it wins within
    max_steps, else None. (The generator's solvability check; `AlfworldEnv` with
    `expert=True` plays the same commands, being seeded by the same game id.)"""
    engine.load(game_file)
    state = engine.reset()
    tracker = ExpertTracker()
    tracker.reset(str(game_file), state, seed_key)
    commands = []
    for _ in range(max_steps):
        if not tracker.plan:
            return None
        commands.append(tracker.plan[0])
        state = engine.step(tracker.plan[0])
        if state["won"]:
            return commands
        tracker.update(state, commands[-1])
    return None
