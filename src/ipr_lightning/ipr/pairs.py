"""Contrastive pairs from explored episodes (IPR_SPEC § 2.2.3) — pure functions.

Outcome pairs (j = 0): the whole expert trajectory against the whole agent trajectory given
the task, kept when the final rewards differ by more than τ_traj; the higher one is chosen.

Step pairs (j ≥ 1): shared prompt = the task plus the expert's first j actions and their
observations; the two sides are the expert's and the agent's continuations from step j+1
(or only the single action at j+1, `step_completion="action"`). Kept when the *same* side
wins on final reward by more than τ_traj *and* on the step value of its action at j+1 by
more than τ_step. The agent may win (`agent_wins=True`, the authors' code) or only the expert
(the paper). Every comparison is strict: a difference equal to τ makes no pair, also when
float rounding puts it a hair above (0.51 - 0.5 > 0.01 in binary floating point).
"""

from __future__ import annotations

from dataclasses import dataclass

from ipr_lightning.config import STEP_COMPLETIONS
from ipr_lightning.data.records import PreferencePair, Turn

EPS = 1e-9  # differences within EPS of τ count as equal to τ


def _above(diff: float, tau: float) -> bool:
    return diff > tau + EPS


@dataclass(frozen=True)
class Side:
    """One side of a comparison: the turns after the shared prompt, its final reward, and
    (step pairs) the MC value of its first action."""

    turns: list[Turn]
    reward: float
    value: float | None = None


@dataclass(frozen=True)
class PairRules:
    tau_traj: float = 0.01
    tau_step: float = 0.5
    agent_wins: bool = True
    step_completion: str = "continuation"

    def __post_init__(self) -> None:
        if self.step_completion not in STEP_COMPLETIONS:
            raise ValueError(f"step_completion must be one of {STEP_COMPLETIONS}")


def outcome_pair(
    task_id: str,
    prompt: list[Turn],
    expert: Side,
    agent: Side,
    rules: PairRules,
    iteration: int,
    prompt_start: int | None = None,
) -> PreferencePair | None:
    """`prompt_start`: leading prompt turns that are the conversation start (see
    `PreferencePair.prompt_start`); stored on the pair."""
    diff = expert.reward - agent.reward
    if not _above(abs(diff), rules.tau_traj):
        return None
    chosen, rejected = (expert, agent) if diff > 0 else (agent, expert)
    return PreferencePair(
        id=f"it{iteration}/{task_id}/outcome",
        prompt=list(prompt),
        chosen=list(chosen.turns),
        rejected=list(rejected.turns),
        pair_type="outcome",
        chosen_reward=chosen.reward,
        rejected_reward=rejected.reward,
        iteration=iteration,
        meta={"task_id": task_id, "step": 0, "winner": "expert" if diff > 0 else "agent"},
        prompt_start=prompt_start,
    )


def step_winner(expert: Side, agent: Side, rules: PairRules) -> str | None:
    """ "expert", "agent" or None under the step-pair rule."""
    if expert.value is None or agent.value is None:
        raise ValueError("step pairs need the step values of both actions")
    d_reward, d_value = expert.reward - agent.reward, expert.value - agent.value
    if _above(d_reward, rules.tau_traj) and _above(d_value, rules.tau_step):
        return "expert"
    if rules.agent_wins and _above(-d_reward, rules.tau_traj) and _above(-d_value, rules.tau_step):
        return "agent"
    return None


@dataclass(frozen=True)
class ValueBound:
    """What the final MC value of an action can still be: `total` is the sum of the first
    `taken` of `n` rollouts' rewards, each reward in [`low`, `high`]. `exact(v)`: a value
    known without sampling (an action that ends the episode)."""

    total: float
    taken: int
    n: int
    low: float = 0.0
    high: float = 1.0

    @classmethod
    def exact(cls, value: float) -> ValueBound:
        return cls(value, 1, 1, value, value)

    @property
    def interval(self) -> tuple[float, float]:
        rest = self.n - self.taken
        return (self.total + rest * self.low) / self.n, (self.total + rest * self.high) / self.n

    @property
    def mean(self) -> float | None:
        """The mean of the rollouts taken (the value itself once all are)."""
        return self.total / self.taken if self.taken else None


UNDECIDED = "undecided"


def step_decision(
    expert_reward: float,
    agent_reward: float,
    expert: ValueBound,
    agent: ValueBound,
    rules: PairRules,
) -> str | None:
    """The step-pair rule (`step_winner`) applied to values not yet fully sampled:
    "expert", "agent" or None when every final value the bounds allow gives that answer,
    else `UNDECIDED`. The rule depends on the values only through d = expert - agent and is
    a threshold in d, so checking the smallest and the largest d that can still come out is
    enough: once this returns a decision, more rollouts cannot change it."""
    e_lo, e_hi = expert.interval
    a_lo, a_hi = agent.interval
    ends = {
        step_winner(Side([], expert_reward, e), Side([], agent_reward, a), rules)
        for e, a in ((e_lo, a_hi), (e_hi, a_lo))
    }
    return ends.pop() if len(ends) == 1 else UNDECIDED


def next_rollout(
    expert_reward: float,
    agent_reward: float,
    expert: ValueBound,
    agent: ValueBound,
    rules: PairRules,
) -> str:
    """Which value of an undecided comparison (`step_decision`) to sample next: "expert" or
    "agent". Each rollout narrows the range of d = expert - agent by the same 1/N, so the
    choice only decides how soon it settles: aim at the likelier answer (pair or no pair,
    from the means so far, smoothed) and sample the side whose next reward is likelier to
    push d that way. Any choice gives the same decision, only after more or fewer rollouts
    (README, "IPR iterations", for what it saved)."""
    open_sides = [
        name
        for name, bound in (("expert", expert), ("agent", agent))
        if bound.taken < bound.n and bound.low != bound.high
    ]
    if len(open_sides) < 2:
        return open_sides[0]
    p_e = (expert.total + 0.5) / (expert.taken + 1)
    p_a = (agent.total + 0.5) / (agent.taken + 1)
    sign = 1.0 if expert_reward > agent_reward else -1.0  # the side the rewards favour
    aim_pair = sign * (p_e - p_a) > rules.tau_step
    # the chance that the next reward moves d towards the aim, per side
    up = {"expert": p_e if sign > 0 else 1 - p_e, "agent": 1 - p_a if sign > 0 else p_a}
    if not aim_pair:
        up = {k: 1 - v for k, v in up.items()}
    return "expert" if up["expert"] >= up["agent"] else "agent"


def step_pair(
    task_id: str,
    j: int,
    prompt: list[Turn],
    expert: Side,
    agent: Side,
    rules: PairRules,
    iteration: int,
    prompt_start: int | None = None,
    winner: str | None = UNDECIDED,
) -> PreferencePair | None:
    """`prompt_start`: leading prompt turns that are the conversation start; the expert
    actions and observations after it may be dropped when the pair is too long. `winner`:
    the rule's answer when already known (`step_decision` on partly sampled values, whose
    means are then only what the sides record); by default it is computed from the values."""
    if winner == UNDECIDED:
        winner = step_winner(expert, agent, rules)
    if winner is None:
        return None
    chosen, rejected = (expert, agent) if winner == "expert" else (agent, expert)

    def completion(side: Side) -> list[Turn]:
        return list(side.turns[:1] if rules.step_completion == "action" else side.turns)

    return PreferencePair(
        id=f"it{iteration}/{task_id}/step{j}",
        prompt=list(prompt),
        chosen=completion(chosen),
        rejected=completion(rejected),
        pair_type="step",
        chosen_reward=chosen.reward,
        rejected_reward=rejected.reward,
        iteration=iteration,
        meta={
            "task_id": task_id,
            "step": j,
            "winner": winner,
            "chosen_value": chosen.value,
            "rejected_value": rejected.value,
        },
        prompt_start=prompt_start,
    )
