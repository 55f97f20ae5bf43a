"""Step values without Monte-Carlo: the labelled data a learned value model trains on, and
which of its predictions `ipr.step_values=mixed` still checks with MC — pure functions.

Labels (IPR paper § 5.5: a step-reward model regressed on MC step values) come from the
rollout store: every action valued by MC rollouts is one example, (the conversation up to
and including the action) -> the mean final reward of its rollouts, `n` of them. The
expert's actions (kind `expert_mc`) and the explored ones (kind `mc`) alike; explored
actions that ended their episode add their reward (exact, no rollouts needed).

Which labels an iteration trains on is fixed when it starts (`LabelSet`, written to
`iter_<k>/value_labels.json`): rollouts that the iteration itself runs (mixed mode, or the
expert's values adaptive MC samples lazily) never leak into its model, so a resumed
iteration trains the same model on the same labels and builds the same pairs.

Held-out tasks (a fixed 1 in 5 by the task id's CRC32) never train the model: its error and
its agreement with MC on pair decisions are measured on them every iteration.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ipr_lightning.data.records import Turn
from ipr_lightning.ipr.pairs import (
    UNDECIDED,
    PairRules,
    Side,
    ValueBound,
    step_decision,
    step_winner,
)
from ipr_lightning.ipr.store import RolloutStore

Item = tuple[Sequence[Turn], str]
"""What a value model values: (the conversation before an action, the action)."""

LabelKey = tuple[int, str, str, int]
"""(iteration, kind, task id, forced actions): one valued action, as the store keys it."""

HELD_OUT_EVERY = 5


def held_out(task_id: str) -> bool:
    """Whether a task's actions are kept out of the value model's training (1 in 5)."""
    return zlib.crc32(task_id.encode("utf-8")) % HELD_OUT_EVERY == 0


@dataclass(frozen=True)
class ValueExample:
    """One valued action: the conversation before it, the action, its value (mean final reward
    of `n` rollouts; n = 0: exact, the action ended the episode with that reward)."""

    key: LabelKey
    prompt: tuple[Turn, ...]
    action: str
    value: float
    n: int

    @property
    def task(self) -> str:
        return self.key[2]


@dataclass(frozen=True)
class LabelSet:
    """The labels an iteration's model trains on: the sample indices of the rollouts of each
    MC-valued action, and the explored actions that ended their episode."""

    rollouts: dict[LabelKey, tuple[int, ...]]
    exact: tuple[LabelKey, ...]

    @classmethod
    def of_store(cls, store: RolloutStore, before: int) -> LabelSet:
        """Everything valued in the store by iterations < `before` (the expert's values,
        stored as iteration 0, all of them: they exist only because an earlier iteration
        ran them)."""
        rollouts: dict[LabelKey, list[int]] = {}
        exact = []
        for (it, kind, task, j, sample), ep in store.items():
            if it >= before:
                continue
            if kind in ("mc", "expert_mc"):
                key = (it, kind, task, j + (kind == "mc"))  # mc: j replayed + the explored one
                rollouts.setdefault(key, []).append(sample)
            elif kind == "explore" and j >= 1 and len(ep.policy_turns) == 1:
                exact.append((it, kind, task, j + 1))
        return cls({k: tuple(sorted(v)) for k, v in sorted(rollouts.items())}, tuple(sorted(exact)))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"rollouts": [[*k, list(s)] for k, s in self.rollouts.items()], "exact": self.exact}
        path.write_text(json.dumps(data) + "\n")

    @classmethod
    def load(cls, path: Path) -> LabelSet:
        data = json.loads(path.read_text())
        rollouts = {(int(r[0]), r[1], r[2], int(r[3])): tuple(r[4]) for r in data["rollouts"]}
        exact = tuple((int(e[0]), e[1], e[2], int(e[3])) for e in data["exact"])
        return cls(rollouts, exact)

    def examples(self, store: RolloutStore) -> list[ValueExample]:
        """The labelled actions, read from the store's episodes."""
        out = []
        for (it, kind, task, t), samples in self.rollouts.items():
            j = t - (kind == "mc")  # the store's prefix index of the group
            eps = [store[(it, kind, task, j, s)] for s in samples]
            dialogue = eps[0].dialogue
            prompt, action = dialogue.prefix(t - 1), dialogue.actions[t - 1]
            value = sum(ep.reward for ep in eps) / len(eps)
            out.append(ValueExample((it, kind, task, t), tuple(prompt), action, value, len(eps)))
        for it, kind, task, t in self.exact:
            ep = store[(it, kind, task, t - 1, 0)]
            prompt, action = ep.dialogue.prefix(t - 1), ep.dialogue.actions[t - 1]
            out.append(ValueExample((it, kind, task, t), tuple(prompt), action, ep.reward, 0))
        return out


@dataclass(frozen=True)
class Comparison:
    """A step-pair decision that labels settle: the expert's and the agent's action after the
    same prefix, their episodes' final rewards and their labelled examples."""

    expert_reward: float
    agent_reward: float
    expert: ValueExample
    agent: ValueExample


def comparisons(
    examples: Sequence[ValueExample], rewards: dict[tuple[int, str, int], tuple[float, float]]
) -> list[Comparison]:
    """The decisions that MC labels settle: each explored action (kind `mc` or an exact
    ending) with the expert's action at the same step, where both are labelled. `rewards`:
    (iteration, task, j) -> (expert's final reward, agent's final reward)."""
    expert = {(e.task, e.key[3]): e for e in examples if e.key[1] == "expert_mc"}
    out = []
    for e in examples:
        if e.key[1] == "expert_mc":
            continue
        it, _, task, t = e.key
        if (task, t) in expert and (it, task, t - 1) in rewards:
            out.append(Comparison(*rewards[(it, task, t - 1)], expert[(task, t)], e))
    return out


def decision(
    c: Comparison, expert_value: float, agent_value: float, rules: PairRules
) -> str | None:
    """The step-pair rule on this comparison with the given values."""
    return step_winner(
        Side([], c.expert_reward, expert_value), Side([], c.agent_reward, agent_value), rules
    )


def near_threshold(
    expert_reward: float,
    agent_reward: float,
    expert_value: float,
    agent_value: float,
    rules: PairRules,
    margin: float,
) -> bool:
    """Whether predicted values put a comparison within `margin` of changing its decision:
    the value gap, signed towards the side the rewards favour, is within `margin` of
    τ_step (`mixed` spends MC rollouts there; elsewhere it trusts the model)."""
    sign = 1.0 if expert_reward >= agent_reward else -1.0
    return abs(sign * (expert_value - agent_value) - rules.tau_step) < margin


@dataclass
class Predicted:
    """Step values of one iteration's comparisons from the value model (`model_values`)."""

    values: dict[tuple[str, int], tuple[float, float]]
    """(task, j) -> (the expert's value at j+1, the agent's): model, stored MC or exact."""
    guessed: dict[tuple[str, int], int]
    """Per comparison, how many of its two values the model gave (the rest were known)."""
    to_mc: set[tuple[str, int]]
    """Comparisons `mixed` checks with MC rollouts (near τ_step)."""
    rewards: dict[tuple[str, int], tuple[float, float]]
    """(task, j) -> the expert's and the agent's final rewards."""

    def merge(
        self,
        expert_v: dict[tuple[str, int], float],
        agent_v: dict[tuple[str, int], float],
        winners: dict[tuple[str, int], str | None],
        rules: PairRules,
    ) -> dict[str, float]:
        """Put the model's values into `expert_v` ((task, j+1)) and `agent_v` ((task, j))
        where MC did not replace them; returns their counts and (mixed) how often the model's
        decision was MC's on the comparisons MC checked (`winners`: adaptive MC's decisions;
        elsewhere the decision of the MC values)."""
        agree = 0
        for key, (e, a) in self.values.items():
            task, j = key
            if key not in self.to_mc:
                expert_v[(task, j + 1)], agent_v[key] = e, a
                continue
            e_reward, a_reward = self.rewards[key]
            model = step_winner(Side([], e_reward, e), Side([], a_reward, a), rules)
            mc = winners.get(key, UNDECIDED)
            if mc == UNDECIDED:
                mc = step_winner(
                    Side([], e_reward, expert_v[(task, j + 1)]),
                    Side([], a_reward, agent_v[key]),
                    rules,
                )
            agree += model == mc
        stats = {
            "values/comparisons": len(self.values),
            # values the model gave that are used: not those MC replaced
            "values/predicted": sum(n for k, n in self.guessed.items() if k not in self.to_mc),
            "values/mc_checked": len(self.to_mc),
        }
        if self.to_mc:
            stats["values/mc_checked_agreement"] = round(agree / len(self.to_mc), 4)
        return stats


def model_values(
    comparisons_: Sequence[tuple[tuple[str, int], float, float, Item, Item]],
    known: dict[tuple[tuple[str, int], int], float],
    valuer: Callable[[list[Item]], list[float]],
    rules: PairRules,
    margin: float | None,
) -> Predicted:
    """Value every comparison `(key, expert reward, agent reward, expert item, agent item)`:
    a side found in `known` ((key, 0) expert, (key, 1) agent: exact or complete MC values)
    keeps that value, the others are predicted in one `valuer` call. `margin` (mixed mode):
    the comparisons whose predictions are `near_threshold` go to `to_mc`; None: none do."""
    items, slots = [], []
    for key, _, _, expert_item, agent_item in comparisons_:
        for side, item in ((0, expert_item), (1, agent_item)):
            if (key, side) not in known:
                slots.append((key, side))
                items.append(item)
    got = dict(known)
    got.update(zip(slots, (min(max(v, 0.0), 1.0) for v in valuer(items)), strict=True))
    values = {key: (got[(key, 0)], got[(key, 1)]) for key, *_ in comparisons_}
    rewards = {key: (e, a) for key, e, a, _, _ in comparisons_}
    guessed = Counter(key for key, _ in slots)
    to_mc = set()
    if margin is not None:
        for key, e_reward, a_reward, _, _ in comparisons_:
            e, a = values[key]
            if key in guessed and near_threshold(e_reward, a_reward, e, a, rules, margin):
                to_mc.add(key)
    return Predicted(values, dict(guessed), to_mc, rewards)


def held_out_metrics(
    examples: Sequence[ValueExample],
    predictions: Sequence[float],
    baseline: float,
    comparisons_: Sequence[Comparison],
    rules: PairRules,
) -> dict[str, float]:
    """The value model on held-out labelled actions: its mean squared error, that of always
    predicting `baseline` (the training labels' mean: what the model must beat), and on the
    comparisons whose rewards allow a step pair, how often its values give MC's decision."""
    if not examples:
        return {"values/heldout_examples": 0}
    pred = {e.key: p for e, p in zip(examples, predictions, strict=True)}
    n = len(examples)
    out = {
        "values/heldout_examples": n,
        "values/heldout_mse": round(sum((pred[e.key] - e.value) ** 2 for e in examples) / n, 5),
        "values/heldout_mse_constant": round(
            sum((baseline - e.value) ** 2 for e in examples) / n, 5
        ),
    }
    unknown = ValueBound(0.0, 0, 1)
    open_ = [
        c
        for c in comparisons_
        if step_decision(c.expert_reward, c.agent_reward, unknown, unknown, rules) is not None
    ]
    if open_:
        same = sum(
            decision(c, pred[c.expert.key], pred[c.agent.key], rules)
            == decision(c, c.expert.value, c.agent.value, rules)
            for c in open_
        )
        out["values/heldout_comparisons"] = len(open_)
        out["values/heldout_decision_agreement"] = round(same / len(open_), 4)
    return out
