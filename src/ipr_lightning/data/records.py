"""Plain records for what the trainer reads and writes: turns, trajectories, preference pairs.

Roles are normalised to `system`, `user` and `assistant` in memory; the files use either the
ShareGPT shape (`from`: human/gpt/system, `value`) or the role/content shape (see `io.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]
PairType = Literal["outcome", "step"]
PAIR_TYPES: tuple[str, ...] = ("outcome", "step")


@dataclass(frozen=True)
class Turn:
    role: Role
    content: str


@dataclass
class Trajectory:
    """One conversation: instruction, `OK`, optional example, task, then actions/observations."""

    id: str
    turns: list[Turn]
    reward: float | None = None
    """Final (outcome) reward, when the file records one."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Every other field of the record (e.g. ALFWorld's `game_file`), written back unchanged."""


@dataclass
class PreferencePair:
    """A shared prompt with a preferred and a dispreferred continuation.

    Only the assistant turns of `chosen` / `rejected` are trained; the prompt's assistant
    turns (an expert prefix for step pairs) are context.
    """

    id: str
    prompt: list[Turn]
    chosen: list[Turn]
    rejected: list[Turn]
    pair_type: PairType = "outcome"
    """`outcome` (whole trajectories, j = 0) or `step` (continuations after an expert prefix)."""
    chosen_reward: float | None = None
    rejected_reward: float | None = None
    iteration: int | None = None
    """IPR iteration that produced the pair."""
    ref_chosen_logp: float | None = None
    """Reference log-prob of the chosen completion (token sum), if precomputed."""
    ref_rejected_logp: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def is_step(self) -> bool:
        return self.pair_type == "step"
