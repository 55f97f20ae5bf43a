"""Plain records for what the trainer reads and writes: turns, trajectories, preference pairs.

Roles are normalised to `system`, `user` and `assistant` in memory; the files use either the
ShareGPT shape (`from`: human/gpt/system, `value`) or the role/content shape (see `io.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
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
    prompt_start: int | None = None
    """Number of leading `prompt` turns that are the conversation start (instruction, `OK`,
    optional in-context example, task): never dropped. The turns after it are history (earlier
    expert actions and their observations, as (assistant, user) pairs) that truncation to
    `data.max_length` may drop, oldest first. None: unknown, the prompt is never shortened."""

    @property
    def is_step(self) -> bool:
        return self.pair_type == "step"


def history_turn_pairs(prompt: Sequence[Turn], prompt_start: int | None) -> int:
    """How many (assistant, user) history pairs follow the first `prompt_start` turns.

    0 when `prompt_start` is None. Raises ValueError (message without the field name) when it
    is out of range or the turns after it are not (assistant, user) pairs.
    """
    if prompt_start is None:
        return 0
    if not 0 <= prompt_start <= len(prompt):
        raise ValueError(
            f"must be between 0 and the {len(prompt)} prompt turns, got {prompt_start}"
        )
    history = prompt[prompt_start:]
    for i, turn in enumerate(history):
        expected = "assistant" if i % 2 == 0 else "user"
        if turn.role != expected:
            raise ValueError(
                f"the turns after the first {prompt_start} must be (assistant, user) history "
                f"pairs, but prompt turn {prompt_start + i} is a {turn.role} turn"
            )
    if len(history) % 2:
        raise ValueError(
            f"the history after the first {prompt_start} turns ends without a user turn"
        )
    return len(history) // 2


@dataclass(frozen=True)
class Step:
    """One agent step: the assistant's output and the observation after it (None when the
    conversation ends with the action)."""

    action: str
    observation: str | None = None


@dataclass(frozen=True)
class Dialogue:
    """A conversation split where the agent acts: the start turns (instruction, `OK`,
    in-context example, task — whatever preceded the first action) and the steps after it.

    The one place that knows where each action sits: prefixes, continuations and prompts are
    built from it, never by counting turns.
    """

    start: tuple[Turn, ...]
    steps: tuple[Step, ...]

    @classmethod
    def of(cls, turns: list[Turn], n_start: int) -> Dialogue:
        """Split `turns` after its first `n_start` turns; the rest must alternate assistant,
        user, assistant, ... (ValueError naming the turn otherwise)."""
        rest = turns[n_start:]
        steps = []
        for i in range(0, len(rest), 2):
            action, obs = rest[i], rest[i + 1] if i + 1 < len(rest) else None
            if action.role != "assistant" or (obs is not None and obs.role != "user"):
                bad = n_start + i if action.role != "assistant" else n_start + i + 1
                raise ValueError(
                    f"turn {bad} is a {turns[bad].role} turn where the agent's actions and "
                    "the observations must alternate (assistant, user, assistant, ...)"
                )
            steps.append(Step(action.content, None if obs is None else obs.content))
        return cls(tuple(turns[:n_start]), tuple(steps))

    @property
    def actions(self) -> list[str]:
        return [s.action for s in self.steps]

    @staticmethod
    def _turns(steps: tuple[Step, ...]) -> list[Turn]:
        out = []
        for s in steps:
            out.append(Turn("assistant", s.action))
            if s.observation is not None:
                out.append(Turn("user", s.observation))
        return out

    def action_turn(self, j: int) -> int:
        """Index in `turns` of action j+1 (the turn after the first `j` steps)."""
        return len(self.start) + 2 * j

    def without_oldest(self, n: int) -> Dialogue:
        """The same start with the `n` oldest steps left out (history dropped to fit)."""
        return Dialogue(self.start, self.steps[n:])

    def prefix(self, j: int) -> list[Turn]:
        """The start and the first `j` steps (the prompt before action j+1)."""
        return [*self.start, *self._turns(self.steps[:j])]

    def after(self, j: int) -> list[Turn]:
        """The steps from action j+1 to the end, as turns."""
        return self._turns(self.steps[j:])

    @property
    def turns(self) -> list[Turn]:
        return self.prefix(len(self.steps))
