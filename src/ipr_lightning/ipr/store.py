"""An append-only, crash-safe store of finished episodes, keyed by what produced them.

One JSON line per episode: `{"key": [iteration, kind, task_id, prefix_len, sample], ...}`.
Each line is written whole and flushed to disk before the next episode is recorded, so a
process killed at any moment loses at most the episode being written: on reopening, a torn
last line is cut off and that episode is simply run again. A damaged complete line elsewhere
(a disk or editor accident) is skipped with a warning naming it, never anything after it.
A key is recorded at most once (recording it twice is a bug and raises), so a resumed run
never duplicates an episode.
"""

from __future__ import annotations

import json
import logging
import os
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
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._episodes: dict[Key, StoredEpisode] = {}
        self.recovered_torn_line = False
        self.skipped_lines: list[int] = []
        """Line numbers of damaged complete lines skipped on load (kept in the file)."""
        if self.path.is_file():
            self._load()
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _load(self) -> None:
        data = self.path.read_bytes()
        whole = 0  # byte offset after the last newline-terminated line
        for lineno, raw in enumerate(data.splitlines(keepends=True), 1):
            if not raw.endswith(b"\n"):
                break  # the torn tail of a kill mid-write
            whole += len(raw)
            try:
                ep = _parse(raw.decode("utf-8"))
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                # A damaged line in the middle: skip it (its episode runs again), keep the rest.
                self.skipped_lines.append(lineno)
                log.warning(
                    "%s: line %d is not an episode record (%s); skipped, its episode "
                    "will run again",
                    self.path,
                    lineno,
                    type(exc).__name__,
                )
                continue
            self._episodes[ep.key] = ep
        if whole < len(data):  # a kill mid-write: drop only the torn tail, that episode is redone
            self.recovered_torn_line = True
            with self.path.open("r+b") as f:
                f.truncate(whole)

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
        stored = _parse(line)
        self._episodes[key] = stored
        return stored
