"""Offline ALFWorld game generator: official file format, all six task types, solvable games.

The official ALFWorld games cannot be downloaded here, so this writes games the unmodified
engine plays, in the official layout:

    <out>/json_2.1.1/{train,valid_seen,valid_unseen}/<task>-<Obj>-None-<Recep>-<scene>/<trial>/
        game.tw-pddl     {"pddl_domain", "grammar" (goal inserted by alfworld's
                          add_task_to_grammar), "pddl_problem", "solvable": true}
        traj_data.json   {"task_type", "pddl_params": {object_target, parent_target, ...}}

Rooms (kitchen, bathroom, bedroom, living room) are drawn as several fixed layouts per room
type (receptacle classes and counts, openable ones closed); each game places objects in
receptacles that can hold them (ALFRED's `VAL_RECEPTACLE_OBJECTS`) and takes its goal from
`alfworld.gen.goal_library`. `valid_seen` reuses the training layouts with new placements;
`valid_unseen` uses held-out layouts. Every game is played by ALFWorld's handcoded expert in
the engine and kept only if the expert wins within `max_steps` (IPR's 20 turns); rejected
candidates are redrawn and counted. Everything derives from string-seeded `random.Random`
streams and sorted collections: the same seed gives byte-identical files under any
PYTHONHASHSEED. A killed generation resumes where it stopped (a journal of finished games;
half-written ones are redone) and ends with the same files. Results on these games are NOT
results on the official 3,553/140/134 split.

    ipr-data alfworld generate --train 2000 --seen 140 --unseen 134 --workers 2
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ipr_lightning.envs.alfworld.engine import SPLITS, TASK_TYPES
from ipr_lightning.envs.alfworld.scenes import Layout, goal_room_types, make_layouts, sample_game
from ipr_lightning.envs.base import env_cache_dir

GENERATOR_VERSION = 1
TYPE_WEIGHTS = {  # official ALFWorld training-set proportions per task type
    "pick_and_place_simple": 790,
    "pick_two_obj_and_place": 813,
    "look_at_obj_in_light": 308,
    "pick_clean_then_place_in_recep": 650,
    "pick_heat_then_place_in_recep": 459,
    "pick_cool_then_place_in_recep": 533,
}
MAX_ATTEMPTS = 50
MARKER = "GENERATED_BY_IPR_LIGHTNING"
JOURNAL = "progress.jsonl"  # finished games of a generation in progress (resume)


@dataclass(frozen=True)
class GameSpec:
    split: str
    index: int
    task_type: str
    seed: int
    max_steps: int


def default_games_dir(
    n_train: int = 2000,
    n_seen: int = 140,
    n_unseen: int = 134,
    seed: int = 0,
    max_steps: int = 20,
    task_types: Sequence[str] = (),
) -> Path:
    """`~/.cache/ipr_lightning/alfworld/<hash of the parameters>` (XDG_CACHE_HOME honoured)."""
    params = _params(n_train, n_seen, n_unseen, seed, max_steps, task_types)
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    return env_cache_dir("alfworld") / f"games-{digest}"


def _params(
    n_train: int, n_seen: int, n_unseen: int, seed: int, max_steps: int, task_types: Sequence[str]
) -> dict:
    params = {
        "version": GENERATOR_VERSION,
        "n_train": n_train,
        "n_valid_seen": n_seen,
        "n_valid_unseen": n_unseen,
        "seed": seed,
        "max_steps": max_steps,
    }
    if task_types:  # only then: the caches of all-type generations keep their names
        params["task_types"] = sorted(task_types)
    return params


def type_counts(n: int) -> dict[str, int]:
    """Games per task type for n games: proportional, largest remainder, each type >= 1
    whenever n >= 6 (so tiny test sets still cover all six)."""
    total = sum(TYPE_WEIGHTS.values())
    floor_n = max(0, n - len(TASK_TYPES)) if n >= len(TASK_TYPES) else n
    base = 1 if n >= len(TASK_TYPES) else 0
    exact = {t: floor_n * w / total for t, w in TYPE_WEIGHTS.items()}
    counts = {t: base + int(v) for t, v in exact.items()}
    order = sorted(TASK_TYPES, key=lambda t: (-(exact[t] - int(exact[t])), TASK_TYPES.index(t)))
    for t in order[: n - sum(counts.values())]:
        counts[t] += 1
    return counts


def plan_split(
    split: str, n: int, seed: int, max_steps: int, task_types: Sequence[str] = ()
) -> list[GameSpec]:
    """The split's games: the six types in ALFWorld's proportions, or `task_types` only (as
    evenly as n allows)."""
    import random

    if task_types:
        chosen = sorted(task_types)
        types = [chosen[i % len(chosen)] for i in range(n)]
    else:
        types = [t for t, c in type_counts(n).items() for _ in range(c)]
    random.Random(f"plan:{seed}:{split}").shuffle(types)
    return [GameSpec(split, i, t, seed, max_steps) for i, t in enumerate(types)]


def _layouts(seed: int) -> dict[str, list[Layout]]:
    global _LAYOUT_CACHE
    if _LAYOUT_CACHE is None or _LAYOUT_CACHE[0] != seed:
        _LAYOUT_CACHE = (seed, make_layouts(seed))
    return _LAYOUT_CACHE[1]


_LAYOUT_CACHE: tuple[int, dict[str, list[Layout]]] | None = None
_ENGINE: Any = None


def _pool_for(spec: GameSpec) -> list[Layout]:
    pool = _layouts(spec.seed)["unseen" if spec.split == "valid_unseen" else "seen"]
    rooms = goal_room_types(spec.task_type)
    return [lay for lay in pool if lay.room in rooms]


def _write_game(game_dir: Path, game: dict[str, Any], traj: dict[str, Any]) -> Path:
    game_dir.mkdir(parents=True, exist_ok=True)
    (game_dir / "traj_data.json").write_text(json.dumps(traj, indent=2, sort_keys=True) + "\n")
    path = game_dir / "game.tw-pddl"
    path.write_text(json.dumps(game, indent=None) + "\n")
    return path


def _check(path: Path, game_id: str, max_steps: int) -> list[str] | None:
    """The handcoded expert's winning commands in this game, or None (one engine per
    worker process, reused for every game)."""
    global _ENGINE
    from ipr_lightning.envs.alfworld.engine import GameEngine, expert_wins

    if _ENGINE is None:
        _ENGINE = GameEngine(facts=True)
    return expert_wins(_ENGINE, path, game_id, max_steps)


def build_one(spec: GameSpec, out_dir: Path) -> tuple[str, int]:
    """Draw candidates for one game until the expert solves one; (game id, rejects)."""
    import random

    pool = _pool_for(spec)
    split_dir = out_dir / "json_2.1.1" / spec.split
    for attempt in range(MAX_ATTEMPTS):
        rng = random.Random(f"game:{spec.seed}:{spec.split}:{spec.index}:{attempt}")
        layout = pool[rng.randrange(len(pool))]
        game, traj, folder = sample_game(rng, layout, spec.task_type)
        game_dir = split_dir / folder / f"trial_T{spec.seed:04d}{spec.index:06d}"
        path = _write_game(game_dir, game, traj)
        game_id = path.relative_to(out_dir).as_posix()
        walkthrough = _check(path, game_id, spec.max_steps)
        if walkthrough is not None:  # alfworld-generate also stores the expert's walkthrough
            _write_game(game_dir, {**game, "walkthrough": walkthrough}, traj)
            return game_id, attempt
        shutil.rmtree(game_dir)
        if not any(game_dir.parent.iterdir()):
            game_dir.parent.rmdir()
    raise RuntimeError(f"no solvable game for {spec} after {MAX_ATTEMPTS} attempts")


def _build_star(args: tuple[GameSpec, Path]) -> tuple[str, str, int]:
    spec, out_dir = args
    game_id, rejects = build_one(spec, out_dir)
    return spec.task_type, game_id, rejects


def _die_with_parent() -> None:
    """Pool worker initializer: on Linux, get SIGKILLed when the parent dies, so a killed
    generation leaves no orphan still writing games beside the run that resumes it."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def parallel_map(
    fn: Callable[[Any], Any],
    jobs: list,
    workers: int,
    progress: bool,
    desc: str,
    on_result: Callable[[Any, Any], None] | None = None,
) -> list:
    """[fn(job) for job in jobs] in order, over `workers` forked processes, with a bar;
    `on_result(job, result)` is called in this process as each result arrives."""
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc=desc, unit="game", disable=not progress)
    results = []

    def take(job: Any, result: Any) -> None:
        results.append(result)
        if on_result is not None:
            on_result(job, result)
        bar.update()

    if workers <= 1:
        for job in jobs:
            take(job, fn(job))
    else:
        with multiprocessing.get_context("fork").Pool(workers, _die_with_parent) as pool:
            for job, result in zip(jobs, pool.imap(fn, jobs, chunksize=4), strict=False):
                take(job, result)
    bar.close()
    return results


def _start_or_resume(out: Path, params: dict[str, Any]) -> dict[tuple[str, int], dict]:
    """Prepare `out` for generation. A generation with the same parameters that was
    interrupted resumes: the games its journal lists are kept (returned by (split, index)),
    any other game folder (one a killed worker left half-written) is removed. Anything
    else this generator wrote is cleared; a folder it did not write is never touched."""
    marker = out / MARKER
    if (out / "json_2.1.1").exists() and not marker.is_file():
        raise FileExistsError(
            f"{out} holds ALFWorld data not written by this generator; choose another --out"
        )
    (out / "manifest.json").unlink(missing_ok=True)
    journal = out / JOURNAL
    done: dict[tuple[str, int], dict] = {}
    if marker.is_file() and _marker_params(marker) == params and journal.is_file():
        for line in journal.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # the line a kill cut short: that game is redone
                break
            done[(record["split"], record["index"])] = record
        keep = {record["game_id"] for record in done.values()}
        for trial in sorted((out / "json_2.1.1").glob("*/*/trial_*")):
            if f"{trial.relative_to(out).as_posix()}/game.tw-pddl" not in keep:
                shutil.rmtree(trial)
                if not any(trial.parent.iterdir()):
                    trial.parent.rmdir()
    else:
        shutil.rmtree(out / "json_2.1.1", ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"written_by": __name__, "params": params}) + "\n")
    journal.write_text("".join(json.dumps(r) + "\n" for r in done.values()), encoding="utf-8")
    return done


def _marker_params(marker: Path) -> Any:
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("params")
    except (json.JSONDecodeError, AttributeError):
        return None


def read_manifest(out_dir: str | Path) -> dict[str, Any] | None:
    path = Path(out_dir) / "manifest.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def generate_games(
    out_dir: str | Path | None = None,
    n_train: int = 2000,
    n_seen: int = 140,
    n_unseen: int = 134,
    seed: int = 0,
    workers: int = 2,
    progress: bool = True,
    max_steps: int = 20,
    task_types: Sequence[str] = (),
) -> dict[str, Any]:
    """Write (or find cached) generated games; returns the manifest (params, per-split per-type
    counts, rejected candidates) plus `out_dir`, `cached`, and when generated `seconds` and
    `resumed` (games kept from an interrupted run with the same parameters)."""
    if min(n_train, n_seen, n_unseen) < 0 or workers < 1 or max_steps < 1:
        raise ValueError("game counts must be >= 0, workers and max_steps >= 1")
    unknown = sorted(set(task_types) - set(TASK_TYPES))
    if unknown:
        raise ValueError(f"unknown task types {unknown}; known: {list(TASK_TYPES)}")
    params = _params(n_train, n_seen, n_unseen, seed, max_steps, task_types)
    out = (
        Path(out_dir)
        if out_dir is not None
        else default_games_dir(n_train, n_seen, n_unseen, seed, max_steps, task_types)
    )
    manifest = read_manifest(out)
    if manifest is not None and manifest.get("params") == params:
        return {**manifest, "out_dir": str(out), "cached": True}
    done = _start_or_resume(out, params)
    start = time.perf_counter()
    sizes = {"train": n_train, "valid_seen": n_seen, "valid_unseen": n_unseen}
    specs = [
        s for split in SPLITS for s in plan_split(split, sizes[split], seed, max_steps, task_types)
    ]
    jobs = [(spec, out) for spec in specs if (spec.split, spec.index) not in done]
    with (out / JOURNAL).open("a", encoding="utf-8") as journal:

        def record(job: tuple[GameSpec, Path], result: tuple[str, str, int]) -> None:
            spec, (_, game_id, rejects) = job[0], result
            entry = {
                "split": spec.split,
                "index": spec.index,
                "game_id": game_id,
                "task_type": spec.task_type,
                "rejects": rejects,
            }
            done[(spec.split, spec.index)] = entry
            journal.write(json.dumps(entry) + "\n")
            journal.flush()

        parallel_map(_build_star, jobs, workers, progress, "alfworld games", record)
    counts = {sp: {t: 0 for t in TASK_TYPES} for sp in SPLITS}
    for entry in done.values():
        counts[entry["split"]][entry["task_type"]] += 1
    manifest = {  # written last: its presence marks a complete generation
        "params": params,
        "counts": counts,
        "rejects": sum(entry["rejects"] for entry in done.values()),
        "note": "generated games: results are NOT on the official ALFWorld 3553/140/134 split",
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (out / JOURNAL).unlink()
    seconds = round(time.perf_counter() - start, 1)
    resumed = len(specs) - len(jobs)
    return {
        **manifest,
        "out_dir": str(out),
        "cached": False,
        "seconds": seconds,
        "resumed": resumed,
    }


_TRAJ_ENV: Any = None


def _trajectory(args: tuple[str, str, str, str, int, list | None]) -> Any:
    global _TRAJ_ENV
    from ipr_lightning.envs.alfworld.env import AlfworldEnv, ExpertTooLong, expert_trajectory

    data_root, split, game_id, style, max_turns, example = args
    key = (Path(data_root), split, max_turns)
    if _TRAJ_ENV is None or (_TRAJ_ENV.data_root, _TRAJ_ENV.split, _TRAJ_ENV.max_turns) != key:
        _TRAJ_ENV = AlfworldEnv(*key, expert=True)  # one per (worker) process
    try:
        return expert_trajectory(_TRAJ_ENV, game_id, style, example)
    except ExpertTooLong:
        return None  # reported by expert_trajectories


def expert_trajectories(
    data_root: str | Path,
    split: str,
    limit: int | None = None,
    progress: bool = True,
    style: str = "put",
    workers: int = 1,
    max_turns: int = 20,
    examples: dict[str, list] | None = None,
    game_ids: Sequence[str] | None = None,
) -> list:
    """The handcoded expert's trajectories (with rationales) for the split's games (or the
    given ones), in game-id order, every action executed in the engine (see
    `alfworld.expert_trajectory`). `examples` maps task types to in-context example turns
    placed before each task. Games the expert cannot win within `max_turns` are left out,
    and the log says how many."""
    from ipr_lightning.envs.alfworld.engine import task_type_of
    from ipr_lightning.envs.alfworld.env import AlfworldEnv

    ids = list(game_ids) if game_ids is not None else AlfworldEnv(data_root, split).task_ids()
    ids = ids[:limit]
    jobs = [
        (
            str(data_root),
            split,
            game_id,
            style,
            max_turns,
            (examples or {}).get(task_type_of(game_id)),
        )
        for game_id in ids
    ]
    trajs = parallel_map(_trajectory, jobs, workers, progress, f"alfworld {split} expert")
    if None in trajs:
        logging.getLogger("ipr_lightning").warning(
            "ALFWorld %s: %d of %d games need more than max_turns=%d expert steps; they are "
            "left out of the expert trajectories",
            split,
            trajs.count(None),
            len(trajs),
            max_turns,
        )
    return [t for t in trajs if t is not None]


ALFWORLD_OWN_DEFAULT = Path("~/.cache/alfworld").expanduser()
_WARNED: set[str] = set()


def resolve_alfworld_data(
    n_train: int = 2000,
    n_seen: int = 140,
    n_unseen: int = 134,
    seed: int = 0,
    workers: int = 2,
    progress: bool = True,
    task_types: Sequence[str] = (),
) -> Path:
    """The ALFWorld data root: `$ALFWORLD_DATA` when it holds the official data, else the
    generated-games cache for these sizes (and only these task types, when given; generated
    on first use). Importing alfworld sets
    `ALFWORLD_DATA` to its own empty default `~/.cache/alfworld`; that value is ignored."""

    log = logging.getLogger("ipr_lightning")
    env = os.environ.get("ALFWORLD_DATA")
    if env:
        root = Path(env).expanduser()
        if (root / "json_2.1.1").is_dir():
            log.info("ALFWorld: using the official data at %s ($ALFWORLD_DATA)", root)
            return root
        if root != ALFWORLD_OWN_DEFAULT:
            raise FileNotFoundError(f"ALFWORLD_DATA={env} has no json_2.1.1 folder")
    manifest = generate_games(
        None, n_train, n_seen, n_unseen, seed, workers, progress, task_types=task_types
    )
    if manifest["out_dir"] not in _WARNED:  # once per run, not once per split
        _WARNED.add(manifest["out_dir"])
        log.warning(
            "ALFWorld: $ALFWORLD_DATA is not set, so GENERATED games are used (%s). Results "
            "on them are NOT results on the official ALFWorld split (3553/140/134); set "
            "ALFWORLD_DATA to the official data to report comparable numbers.",
            manifest["out_dir"],
        )
    return Path(manifest["out_dir"])
