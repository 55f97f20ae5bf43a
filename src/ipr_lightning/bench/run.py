"""Running a bench's cells: SFT once per seed, then each method from SFT's checkpoint.

A cell is finished when its `cell.json` exists; a finished cell is never run again. An
unfinished one resumes (`ipr-fit --resume` semantics): a killed bench, started again, finishes
what it left. A method cell is seeded before its first launch with

- the SFT cell's checkpoint, its phase row and its evaluation (the method resumes at the
  SFT/iteration-1 boundary and evaluates nothing twice);
- the rollouts of iteration 1 (and the expert MC values) other cells of the seed already ran:
  every method explores iteration 1 with the same SFT policy and scores with the same SFT
  scorer, so those episodes are the same; they are run once per seed.

The checkpoint is copied last: its presence marks a seeded cell.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from ipr_lightning.bench.plan import SFT, BenchConfig, cell_config, cells
from ipr_lightning.cli import fit
from ipr_lightning.config import (
    HARMLESS_KEYS,
    ConfigError,
    RunConfig,
    config_changes,
    load_config,
)
from ipr_lightning.models import SCRATCH
from ipr_lightning.precision import describe_machine

log = logging.getLogger("ipr_lightning")
CELL_DONE = "cell.json"
SHARED_ITERATIONS = (0, 1)  # expert MC values and iteration 1: the SFT policy's episodes


def is_done(folder: Path) -> bool:
    return (folder / CELL_DONE).is_file()


def last_checkpoint(folder: Path) -> Path:
    return folder / "checkpoints" / "last.ckpt"


def _keyed_lines(path: Path) -> Iterator[tuple[tuple, str]]:
    """(key, line) of every readable line of a rollout store; damaged lines are left out
    (the run that needs those episodes makes them again)."""
    if not path.is_file():
        return
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            yield tuple(json.loads(line)["key"]), line
        except (ValueError, KeyError, TypeError):
            continue


def share_rollouts(sources: list[Path], target: Path) -> int:
    """Append to `target` the episodes of `SHARED_ITERATIONS` found in `sources` (other
    cells' rollouts.jsonl) that it lacks; returns how many."""
    have = {key for key, _ in _keyed_lines(target)}
    added = []
    for source in sources:
        for key, line in _keyed_lines(source):
            if key[0] in SHARED_ITERATIONS and key not in have:
                have.add(key)
                added.append(line)
    if added:
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("a", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in added)
    return len(added)


def seed_from_sft(sft: Path, cell: Path, siblings: list[Path]) -> None:
    """Give a method cell SFT's results and the shared rollouts; the checkpoint last."""
    cell.mkdir(parents=True, exist_ok=True)
    shared = share_rollouts([s / "rollouts.jsonl" for s in siblings], cell / "rollouts.jsonl")
    if shared:
        log.info("%s: %d rollouts shared from the seed's other cells", cell, shared)
    shutil.copy2(sft / "phases.jsonl", cell / "phases.jsonl")
    shutil.copytree(sft / "eval" / "after_sft", cell / "eval" / "after_sft", dirs_exist_ok=True)
    last_checkpoint(cell).parent.mkdir(parents=True, exist_ok=True)
    tmp = last_checkpoint(cell).with_suffix(".tmp")
    shutil.copy2(last_checkpoint(sft), tmp)
    tmp.replace(last_checkpoint(cell))


SFT_IGNORES = ("ipr.", "loss.")  # the preference phases' settings: an SFT cell has none


def changed_keys(saved: RunConfig, now: RunConfig) -> list[str]:
    """Config keys whose values differ, but those that cannot change a result (for an SFT
    cell, which runs no iteration, the preference phases' settings neither). Paths inside
    the cells' bench folder are compared relative to it, so a bench folder may be moved."""
    harmless = HARMLESS_KEYS + (SFT_IGNORES if saved.ipr.iterations == 0 else ())
    return [k for k in config_changes(saved, now) if not k.startswith(harmless)]


def check_unchanged(folder: Path, cfg: RunConfig) -> None:
    """A cell started under other settings must not be continued or reported as this one."""
    saved = folder / "config.yaml"
    if not saved.is_file():
        return
    old = load_config(saved)
    if cfg.model.name_or_path == SCRATCH:  # the SFT cell names the folder it built
        cfg = replace(cfg, model=replace(cfg.model, name_or_path=old.model.name_or_path))
    keys = changed_keys(old, cfg)
    if keys:
        raise ConfigError(
            f"{folder} was run with other settings ({', '.join(keys[:6])}"
            f"{', ...' if len(keys) > 6 else ''}): use another bench.name, or put the config "
            "back as it was"
        )


def config_of(bench: BenchConfig, raw, path: str | Path, seed: int, method: str) -> RunConfig:
    """The run config of a cell (a method cell's: once its seed's SFT cell has started)."""
    if method == SFT:
        return cell_config(bench, raw, path, seed, SFT)
    sft_dir = bench.cell_dir(seed, SFT)
    sft_cfg = load_config(sft_dir / "config.yaml")
    was = sft_cfg.output_dir  # where the SFT cell ran (a bench folder may have moved since)
    if sft_cfg.model.name_or_path.startswith(was):  # the scratch model it built
        sft_cfg.model.name_or_path = str(sft_dir) + sft_cfg.model.name_or_path[len(was) :]
    sft_cfg.output_dir = str(sft_dir)
    return cell_config(bench, raw, path, seed, method, sft=sft_cfg)


def check_cells(bench: BenchConfig, raw, path: str | Path) -> None:
    """Every cell already on disk was run with the settings the bench has now (and every
    SFT cell of `bench.sft_from` is finished)."""
    for seed in bench.seeds if bench.sft_from else ():
        if not is_done(bench.cell_dir(seed, SFT)):
            raise ConfigError(
                f"bench.sft_from: {bench.cell_dir(seed, SFT)} is not a finished SFT cell: "
                "finish that bench first (or leave bench.sft_from out to train SFT here)"
            )
    for seed, method in cells(bench):
        folder = bench.cell_dir(seed, method)
        if (folder / "config.yaml").is_file():
            check_unchanged(folder, config_of(bench, raw, path, seed, method))


def run_cell(bench: BenchConfig, raw, path: str | Path, seed: int, method: str) -> bool:
    """Run (or resume) one cell unless it is finished; True if it ran."""
    folder = bench.cell_dir(seed, method)
    if is_done(folder):
        return False
    cfg = config_of(bench, raw, path, seed, method)
    check_unchanged(folder, cfg)
    start = time.perf_counter()
    if method == SFT:
        fit(cfg, last_checkpoint(folder).is_file(), evaluate_sft=True)
    else:
        sft_dir = bench.cell_dir(seed, SFT)
        if not last_checkpoint(folder).is_file():
            siblings = [bench.cell_dir(seed, m) for m in bench.methods if m != method]
            seed_from_sft(sft_dir, folder, siblings)
        fit(cfg, True)
    record = {
        "seed": seed,
        "method": method,
        "seconds_last_launch": round(time.perf_counter() - start, 1),
        "machine": describe_machine(cfg.trainer.accelerator),
    }
    (folder / CELL_DONE).write_text(json.dumps(record, indent=1) + "\n")
    return True


def run_bench(bench: BenchConfig, raw, path: str | Path) -> list[tuple[int, str, bool]]:
    """Every cell in order (finished ones skipped); returns (seed, method, ran) per cell."""
    todo = cells(bench)
    done = []
    for i, (seed, method) in enumerate(todo, 1):
        state = "done" if is_done(bench.cell_dir(seed, method)) else "running"
        print(f"ipr-bench: cell {i}/{len(todo)}: seed {seed}, {method} ({state})", flush=True)
        done.append((seed, method, run_cell(bench, raw, path, seed, method)))
    return done
