"""An append-only, crash-safe store of finished episodes, keyed by what produced them.

One JSON line per episode: `{"key": [iteration, kind, task_id, prefix_len, sample], ...}`.
Each line is written whole and flushed to disk before the next episode is recorded, so a
process killed at any moment loses at most the episode being written: on reopening, a torn
last line is cut off and that episode is simply run again. A damaged complete line elsewhere
(a disk or editor accident) is skipped with a warning naming it, never anything after it.
A key is recorded at most once (recording it twice is a bug and raises), so a resumed run
never duplicates an episode.

Several processes (ranks) share one store through one file each: rank 0 appends to the
store's path (`rollouts.jsonl`), rank r > 0 to `rollouts.rank<r>.jsonl` beside it, and every
process reads them all (`reload` picks up what the others wrote since). The store is keyed by
episode, not by rank: a run killed with two ranks resumes with one (or four) and finds every
finished episode, whoever ran it. Only a file's writer cuts its torn tail; readers skip it.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from ipr_lightning.data.io import turns_from_json, turns_to_json
from ipr_lightning.data.records import Dialogue
from ipr_lightning.rollout.engine import Episode

log = logging.getLogger("ipr_lightning")

Key = tuple[int, str, str, int, int]
"""(iteration, kind, task id, prefix length j, sample index)."""


@dataclass(frozen=True)
class StoredEpisode:
    """What later stages need of a finished episode (its whole conversation included)."""

    key: Key
    turns: list
    n_prompt: int
    n_forced: int
    reward: float
    terminated: bool
    truncated: bool
    generated_tokens: int
    invalid: int

    @cached_property
    def dialogue(self) -> Dialogue:
        """The conversation split into its start and the (action, observation) steps."""
        return Dialogue.of(self.turns, self.n_prompt)

    @property
    def policy_turns(self) -> list:
        """The turns after the forced prefix: the policy's actions and their observations."""
        return self.dialogue.after(self.n_forced)


def _record(key: Key, ep: Episode) -> dict[str, Any]:
    return {
        "key": list(key),
        "reward": ep.reward,
        "terminated": ep.terminated,
        "truncated": ep.truncated,
        "n_prompt": ep.n_prompt,
        "n_forced": ep.n_forced,
        "generated_tokens": ep.generated_tokens,
        "invalid": ep.invalid,
        "conversations": turns_to_json(ep.turns),
    }


def _parse(line: str) -> StoredEpisode:
    rec = json.loads(line)
    key = tuple(rec["key"])
    return StoredEpisode(
        key=(int(key[0]), str(key[1]), str(key[2]), int(key[3]), int(key[4])),
        turns=turns_from_json(rec["conversations"]),
        n_prompt=rec["n_prompt"],
        n_forced=rec["n_forced"],
        reward=float(rec["reward"]),
        terminated=bool(rec["terminated"]),
        truncated=bool(rec["truncated"]),
        generated_tokens=int(rec["generated_tokens"]),
        invalid=int(rec["invalid"]),
    )


class RolloutStore:
    def __init__(self, path: str | Path, rank: int = 0) -> None:
        self.path = Path(path)
        """The file this process appends to (rank 0: `path`; rank r: `<stem>.rank<r>.jsonl`)."""
        if rank:
            self.path = self.path.with_name(f"{self.path.stem}.rank{rank}{self.path.suffix}")
        self._base = Path(path)
        self._episodes: dict[Key, StoredEpisode] = {}
        self._read: dict[Path, tuple[int, int]] = {}  # (bytes, lines) of each file loaded
        self.recovered_torn_line = False
        self.skipped_lines: list[int] = []
        """Line numbers of damaged complete lines skipped on load (kept in the file)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.reload()

    def files(self) -> list[Path]:
        """Every rank's file of this store, by rank."""
        base = self._base
        name = re.compile(rf"{re.escape(base.stem)}\.rank(\d+){re.escape(base.suffix)}")
        ranked = {
            int(m.group(1)): p for p in base.parent.iterdir() if (m := name.fullmatch(p.name))
        }
        return [base, *(ranked[r] for r in sorted(ranked))]

    def reload(self) -> int:
        """Read what was appended to the store's files since the last load (the other
        ranks' episodes); returns how many episodes that added."""
        before = len(self._episodes)
        for file in self.files():
            if file.is_file():
                self._load(file)
        return len(self._episodes) - before

    def _load(self, file: Path) -> None:
        start, lines = self._read.get(file, (0, 0))
        with file.open("rb") as f:
            f.seek(start)
            data = f.read()
        whole = 0  # bytes up to the last newline-terminated line
        for lineno, raw in enumerate(data.splitlines(keepends=True), lines + 1):
            if not raw.endswith(b"\n"):
                break  # the torn tail of a kill mid-write (or a line being written now)
            whole += len(raw)
            try:
                ep = _parse(raw.decode("utf-8"))
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                # A damaged line in the middle: skip it (its episode runs again), keep the rest.
                if file == self.path:
                    self.skipped_lines.append(lineno)
                log.warning(
                    "%s: line %d is not an episode record (%s); skipped, its episode "
                    "will run again",
                    file,
                    lineno,
                    type(exc).__name__,
                )
                continue
            if ep.key in self._episodes:  # two ranks ran one key: keep the first record
                log.warning("%s: line %d repeats episode %s; ignored", file, lineno, ep.key)
                continue
            self._episodes[ep.key] = ep
        self._read[file] = (start + whole, lines + data[:whole].count(b"\n"))
        if file == self.path and whole < len(data):
            # this process's own kill mid-write: drop only the torn tail, that episode is redone
            self.recovered_torn_line = True
            with file.open("r+b") as f:
                f.truncate(start + whole)

    def __contains__(self, key: Key) -> bool:
        return key in self._episodes

    def __len__(self) -> int:
        return len(self._episodes)

    def __getitem__(self, key: Key) -> StoredEpisode:
        return self._episodes[key]

    def get(self, key: Key) -> StoredEpisode | None:
        return self._episodes.get(key)

    def items(self, iteration: int | None = None, kind: str | None = None) -> Iterator:
        for key, ep in self._episodes.items():
            if (iteration is None or key[0] == iteration) and (kind is None or key[1] == kind):
                yield key, ep

    def add(self, key: Key, episode: Episode) -> StoredEpisode:
        if key in self._episodes:
            raise KeyError(f"episode {key} is already in {self.path}")
        line = json.dumps(_record(key, episode), ensure_ascii=False) + "\n"
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        start, lines = self._read.get(self.path, (0, 0))
        self._read[self.path] = (start + len(line.encode("utf-8")), lines + 1)
        stored = _parse(line)
        self._episodes[key] = stored
        return stored
