"""Exploration sharded across processes (gloo, 2 ranks on the CPU): the same pairs as one
process from the union of the ranks' episodes, each episode in exactly one rank's file, and
a run killed with one world size finished by another without losing or repeating an episode.
The policies toss seeded coins (the seeds come from the episode keys), so pairs built from
episodes sampled with other seeds would differ."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sharded_explore_worker import explore

from ipr_lightning.data.io import read_pairs
from ipr_lightning.ipr.store import RolloutStore

WORKER = Path(__file__).with_name("sharded_explore_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(out: Path, world: int) -> list:
    """Run `world` worker processes on `out`; the pairs each rank built (all equal)."""
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(out), str(rank), str(world), str(port)],
            cwd=WORKER.parent,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(world)
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(errors)
    pairs = [read_pairs(out / f"pairs.rank{rank}.json") for rank in range(world)]
    assert all(p == pairs[0] for p in pairs)
    return pairs[0]


def keys_per_file(out: Path) -> dict[str, list]:
    """Keys of each whole line of each rank's file (a torn tail no rank owns now stays)."""
    return {
        f.name: [tuple(json.loads(line)["key"]) for line in f.read_text().split("\n")[:-1]]
        for f in RolloutStore(out / "r.jsonl").files()
    }


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    return out, explore(out)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    out = tmp_path_factory.mktemp("two")
    return out, run_ranks(out, 2)


def test_two_ranks_build_the_single_process_pairs(single, sharded):
    (one, pairs), (two, sharded_pairs) = single, sharded
    assert pairs and {p.pair_type for p in pairs} == {"outcome", "step"}
    assert sharded_pairs == pairs
    files = keys_per_file(two)
    assert sorted(files) == ["r.jsonl", "r.rank1.jsonl"] and all(files.values())
    every = [k for keys in files.values() for k in keys]
    assert len(every) == len(set(every))  # each episode run by exactly one rank
    assert sorted(every) == sorted(keys_per_file(one)["r.jsonl"])


def cut(file: Path, keep: int, torn: bool = True) -> list:
    """Keep `keep` whole lines of `file` (and half of the next, as a kill mid-write leaves it);
    returns the keys cut off."""
    lines = file.read_text().splitlines(keepends=True)
    file.write_text("".join(lines[:keep]) + (lines[keep][:40] if torn else ""))
    return [tuple(json.loads(line)["key"]) for line in lines[keep:]]


@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2)])
def test_a_run_killed_with_one_world_size_is_finished_by_another(single, tmp_path, before, after):
    one, pairs = single
    if before == 1:
        (tmp_path / "r.jsonl").write_text((one / "r.jsonl").read_text())
    else:
        run_ranks(tmp_path, 2)
    lost = cut(tmp_path / ("r.rank1.jsonl" if before == 2 else "r.jsonl"), keep=5)
    assert lost
    resumed = run_ranks(tmp_path, after) if after == 2 else explore(tmp_path)
    assert resumed == pairs
    every = Counter(k for keys in keys_per_file(tmp_path).values() for k in keys)
    assert set(every) == set(keys_per_file(one)["r.jsonl"])
    assert max(every.values()) == 1  # nothing run twice; the lost episodes were run again
