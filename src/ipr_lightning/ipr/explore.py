"""One IPR iteration's data: step-wise exploration, Monte-Carlo step values, pairs.

Plain Python over the rollout engine (no Lightning). Every episode is keyed
`(iteration, kind, task, j, sample)` and appended to the `RolloutStore` as it finishes;
episodes already in the store are never run again, so a killed iteration resumes where it
stopped and builds the same pairs (sampling seeds depend on the key, not on batching).

Expert trajectories come as `ExpertTask`s (`experts.py`): prefixes and continuations are
taken from their `Dialogue`, and the replayed episodes' from the store's record of them.

Kinds: `expert_mc` — N scorer rollouts after expert action t (iteration 0, once per run);
`explore` — the explorer after j replayed expert actions (greedy); `mc` — N scorer rollouts
after the explored action at j+1 (prefix and that action replayed in the env).

For task with expert actions a_1..a_n and prompt u (IPR_SPEC § 2.2):
- exploration j = 0..n-1: replay a_1..a_j, the explorer continues (â_{j+1}, ...);
- step value of a_t (2 <= t < n; a_1 is never compared) and of â_{j+1} (j >= 1): mean final
  reward of N scorer rollouts (temperature `mc_temperature`) started after it; an action that
  ends the episode is valued by its own reward;
- `pair_types` decides what is run: `outcome` explores j = 0 only; `step` explores j >= 1
  and pays for the MC values (expert and agent); ETO's setting is `("outcome",)`;
- pairs as in `pairs.py`. With `mc_only_when_needed` (default) MC rollouts are skipped for
  explored actions whose episode ends with the same final reward as the expert within
  τ_traj: no step pair can form there, whatever the values, so no pair changes.
- `mc="adaptive"`: the expert's and the agent's value at j+1 are sampled in rounds, one
  rollout of one of them per comparison and round (`pairs.next_rollout` picks which; sample
  indices 0, 1, ... per value as in `fixed`, so the same rollouts where both take them), and
  a comparison stops as soon as the remaining rollouts cannot change its step-pair decision
  (`pairs.step_decision`: exact for final rewards in [0, 1], which every shipped environment
  gives; a reward outside it stops the iteration with an error). Only the comparisons where a
  pair can form are sampled at all, expert values included (in `fixed` mode every expert
  value t = 2..n-1 is paid for up front). The values recorded are the means of the rollouts
  taken. N = `mc_samples` stays the most any value gets.
- a `valuer` (the value model of `step_values` model/mixed, `values.py`): the comparisons that
  can form a pair are valued by it instead (values known without it kept: exact ones, and
  the expert's whose N rollouts are all in the store); `mixed` sends those whose predicted
  gap is near τ_step to MC (`mc`'s way), whose values then replace the predictions.

Several processes explore together through a `Shard` (one per rank): each runs the episodes
whose key hashes to its rank, appending to its own store file; after each stage a barrier,
and every rank reads the others' episodes, so all ranks build the same pairs from the same
union of episodes, whatever their number (the seeds depend on the key, not on the rank).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ipr_lightning.data.io import write_pairs
from ipr_lightning.data.records import PreferencePair
from ipr_lightning.envs.base import EnvHandle
from ipr_lightning.ipr.experts import ExpertTask
from ipr_lightning.ipr.pairs import (
    EPS,
    UNDECIDED,
    PairRules,
    Side,
    ValueBound,
    next_rollout,
    outcome_pair,
    step_decision,
    step_pair,
)
from ipr_lightning.ipr.store import Key, RolloutStore, StoredEpisode
from ipr_lightning.ipr.values import Item, Predicted, model_values
from ipr_lightning.rollout.engine import EpisodeSpec, run_episodes
from ipr_lightning.rollout.policy import Policy, Sampling
from ipr_lightning.rollout.shard import Shard

log = logging.getLogger("ipr_lightning")


@dataclass(frozen=True)
class ExploreSettings:
    mc_samples: int = 5
    mc_temperature: float = 1.0
    mc_only_when_needed: bool = True
    max_new_tokens: int = 128
    max_live: int = 64
    seed: int = 0
    rules: PairRules = field(default_factory=PairRules)
    pair_types: tuple[str, ...] = ("outcome", "step")
    """`outcome` explores j = 0; `step` explores j >= 1 and pays for the MC values."""
    mc: str = "fixed"
    """`fixed`: N rollouts per value; `adaptive`: stop once the pair decision is settled."""
    step_values: str = "mc"
    """`mc`; `model`: a value model's predictions where one is given; `mixed`: those, and MC
    where they are within `value_margin` of changing a decision."""
    value_margin: float = 0.2
    """`mixed`: how near τ_step a predicted value gap sends a comparison to MC."""


@dataclass
class IterationResult:
    iteration: int
    pairs: list[PreferencePair]
    stats: dict[str, float]
    values: list[dict] = field(default_factory=list)
    """Per explored step (j >= 1): the expert's and the agent's step values at j+1 and both
    final rewards (`agent_value` None where MC was skipped): the diagnostics' raw data."""


class Exploration:
    """Runs the episodes of IPR iterations against one store (see the module docstring)."""

    def __init__(
        self,
        handle: EnvHandle,
        tasks: Sequence[ExpertTask],
        store: RolloutStore,
        settings: ExploreSettings,
        progress: bool = True,
        shard: Shard | None = None,
    ) -> None:
        self.handle, self.tasks, self.store = handle, list(tasks), store
        self._by_id = {t.task_id: t for t in self.tasks}
        self.s, self.progress = settings, progress
        self.shard = shard or Shard()

    def task_reward(self, task_id: str) -> float | None:
        """The expert's final reward on a task (None: not one of this run's tasks)."""
        task = self._by_id.get(task_id)
        return None if task is None else task.reward

    # --- running keyed episodes -----------------------------------------------------------

    def _run(
        self, specs: list[EpisodeSpec], policy: Policy, sampling: Sampling, desc: str
    ) -> dict[Key, StoredEpisode]:
        """Every spec's episode, from the store or run now (and stored as it finishes): this
        rank runs its share, then waits for the others' and reads them."""
        todo = [s for s in specs if s.key not in self.store and self.shard.owns(s.key)]
        if todo:
            run_episodes(
                self.handle.make_env,
                todo,
                policy,
                sampling,
                self.handle.build_start,
                max_live=self.s.max_live,
                progress=self.progress,
                desc=desc,
                on_done=lambda ep: self.store.add(ep.key, ep),
            )
        if self.shard.barrier is not None:
            self.shard.barrier()
            self.store.reload()
        if missing := [spec.key for spec in specs if spec.key not in self.store]:
            raise RuntimeError(
                f"{desc}: {len(missing)} episodes are in no rank's file of {self.store.path.parent}"
                f" (first: {missing[0]})"
            )
        return {spec.key: self.store[spec.key] for spec in specs}

    def _scorer_sampling(self) -> Sampling:
        return Sampling(
            temperature=self.s.mc_temperature,
            max_new_tokens=self.s.max_new_tokens,
            seed=self.s.seed,
            action_end=self.handle.action_end,
        )

    def _mc_values(
        self, kind: str, iteration: int, prefixes: dict[tuple[str, int], list[str]], scorer: Policy
    ) -> dict[tuple[str, int], float]:
        """Mean final reward of N scorer rollouts after each forced prefix."""
        specs = [
            EpisodeSpec(task, tuple(forced), (iteration, kind, task, j, s))
            for (task, j), forced in prefixes.items()
            for s in range(self.s.mc_samples)
        ]
        done = self._run(specs, scorer, self._scorer_sampling(), f"{kind} it{iteration}")
        values: dict[tuple[str, int], list[float]] = {}
        for (_, _, task, j, _), ep in done.items():
            values.setdefault((task, j), []).append(ep.reward)
        return {k: sum(v) / len(v) for k, v in values.items()}

    # --- the stages -------------------------------------------------------------------------

    def expert_values(
        self, scorer: Policy, only: set[tuple[str, int]] | None = None
    ) -> dict[tuple[str, int], float]:
        """Step value of expert actions a_t, t = 2..n (computed once: iteration 0), or of
        those in `only`. Step pairs start at j >= 1 and compare a_{j+1}, so a_1's value is
        never used and not paid for."""
        prefixes = {
            (t.task_id, k): t.actions[:k]
            for t in self.tasks
            for k in range(2, len(t.actions))
            if only is None or (t.task_id, k) in only
        }
        values = self._mc_values("expert_mc", 0, prefixes, scorer)
        for t in self.tasks:  # the last action ends the episode: its value is the reward
            values[(t.task_id, len(t.actions))] = t.reward
        return values

    def _prefix_lengths(self, n_actions: int) -> list[int]:
        """The j explored for a task: 0 for outcome pairs, 1..n-1 for step pairs."""
        first = 0 if "outcome" in self.s.pair_types else 1
        last = n_actions if "step" in self.s.pair_types else 1
        return list(range(first, min(last, n_actions)))

    def explore(self, iteration: int, explorer: Policy) -> dict[tuple[str, int], StoredEpisode]:
        specs = [
            EpisodeSpec(t.task_id, tuple(t.actions[:j]), (iteration, "explore", t.task_id, j, 0))
            for t in self.tasks
            for j in self._prefix_lengths(len(t.actions))
        ]
        greedy = Sampling(
            temperature=0.0,
            max_new_tokens=self.s.max_new_tokens,
            action_end=self.handle.action_end,
        )
        done = self._run(specs, explorer, greedy, f"explore it{iteration}")
        return {(key[2], key[3]): ep for key, ep in done.items()}

    def scorer_totals(self, iteration: int) -> dict[str, int]:
        """MC rollouts in the store that iteration `iteration` may run (the expert's, shared
        by all iterations, and its own) and their generated tokens: what it ran is what they
        grow by while it runs."""
        eps = [
            ep
            for key, ep in self.store.items()
            if key[1] == "expert_mc" or key[:2] == (iteration, "mc")
        ]
        return {"episodes": len(eps), "tokens": sum(ep.generated_tokens for ep in eps)}

    def _scoring(self, run: Callable, *args):
        """`run(*args)`, its seconds added to this iteration's scorer time."""
        start = time.perf_counter()
        try:
            return run(*args)
        finally:
            self._scorer_seconds += time.perf_counter() - start

    def iteration(
        self,
        iteration: int,
        explorer: Policy,
        scorer: Policy,
        out_dir: str | Path | None = None,
        valuer: Callable[[list[Item]], list[float]] | None = None,
        scorer_before: dict[str, int] | None = None,
    ) -> IterationResult:
        """Explore, score and pair for `iteration` (>= 1); writes iter_<k>/pairs.json.
        `valuer`: the value model of `step_values` model/mixed (None: MC values);
        `scorer_before`: `scorer_totals(iteration)` when the iteration first started
        (default: now), so that a resumed iteration still counts the rollouts it ran before
        it was killed (its scorer seconds are this process's only)."""
        start = time.perf_counter()
        before = scorer_before or self.scorer_totals(iteration)
        self._scorer_seconds = 0.0
        adaptive = self.s.mc == "adaptive"
        steps = "step" in self.s.pair_types
        valued = steps and valuer is not None
        expert_v = {}
        if steps and not adaptive and not valued:
            expert_v = self._scoring(self.expert_values, scorer)
        explored = self.explore(iteration, explorer)
        tau = self.s.rules.tau_traj
        by_id = {t.task_id: t for t in self.tasks}
        needed: dict[tuple[str, int], list[str]] = {}
        agent_v: dict[tuple[str, int], float] = {}
        winners: dict[tuple[str, int], str | None] = {}
        for (task, j), ep in explored.items():
            if j == 0 or not ep.policy_turns:  # none: the replayed prefix already ended it
                continue
            first_action = ep.policy_turns[0].content
            if len(ep.policy_turns) == 1:  # â ended the episode: its value is its reward
                agent_v[(task, j)] = ep.reward
            elif self.s.mc_only_when_needed and abs(by_id[task].reward - ep.reward) <= tau + EPS:
                continue  # no step pair possible here, whatever the values
            else:
                needed[(task, j)] = [*by_id[task].actions[:j], first_action]
        predicted = None
        if valued:  # MC only for what `mixed` checks (below)
            predicted = self._model_values(explored, needed, agent_v, valuer)
            needed = {k: v for k, v in needed.items() if k in predicted.to_mc}
            agent_v = {k: v for k, v in agent_v.items() if k in predicted.to_mc}
            if predicted.to_mc and not adaptive:
                only = {(task, j + 1) for task, j in predicted.to_mc}
                expert_v = self._scoring(self.expert_values, scorer, only)
        if adaptive:
            winners = self._scoring(
                self._adaptive_values, iteration, explored, needed, agent_v, expert_v, scorer
            )
        else:
            agent_v.update(self._scoring(self._mc_values, "mc", iteration, needed, scorer))
        value_stats, from_model = {}, set()
        if predicted is not None:
            value_stats = predicted.merge(expert_v, agent_v, winners, self.s.rules)
            from_model = set(predicted.values) - predicted.to_mc
        values = [
            {
                "task": task,
                "j": j,
                "expert_value": expert_v.get((task, j + 1)),
                "agent_value": agent_v.get((task, j)),
                "expert_reward": by_id[task].reward,
                "agent_reward": ep.reward,
                "predicted": (task, j) in from_model,  # values from the value model, not MC
            }
            for (task, j), ep in sorted(explored.items())
            if j >= 1 and ep.policy_turns
        ]
        pairs, mismatched = [], 0
        for (task, j), ep in sorted(explored.items()):
            expert = by_id[task]
            replayed = ep.dialogue
            prompt = replayed.prefix(j)  # the replayed prefix, fresh observations
            if prompt != expert.dialogue.prefix(j):
                mismatched += 1  # the env did not reproduce the recorded prefix
            if not ep.policy_turns:
                continue
            agent = Side(ep.policy_turns, ep.reward, agent_v.get((task, j)))
            if j == 0:
                pair = outcome_pair(
                    task,
                    prompt,
                    Side(expert.continuation(0), expert.reward),
                    agent,
                    self.s.rules,
                    iteration,
                    prompt_start=len(replayed.start),
                )
            elif agent.value is None or (task, j + 1) not in expert_v:
                continue  # not valued: no pair could form (see `needed`, `_adaptive_values`)
            else:
                side = Side(expert.continuation(j), expert.reward, expert_v[(task, j + 1)])
                pair = step_pair(
                    task,
                    j,
                    prompt,
                    side,
                    agent,
                    self.s.rules,
                    iteration,
                    prompt_start=len(replayed.start),
                    winner=winners.get((task, j), UNDECIDED),
                )
            if pair is not None:
                pairs.append(pair)
        if mismatched:
            log.warning(
                "iteration %d: %d replayed prefixes differ from the expert record "
                "(non-deterministic env?)",
                iteration,
                mismatched,
            )
        stats = self._stats(iteration, explored, pairs, time.perf_counter() - start, before)
        stats.update(value_stats)
        if out_dir is not None:
            folder = Path(out_dir) / f"iter_{iteration}"
            write_pairs(folder / "pairs.json", pairs)
            (folder / "stats.json").write_text(json.dumps(stats, indent=1) + "\n")
        return IterationResult(iteration, pairs, stats, values)

    def _adaptive_values(
        self,
        iteration: int,
        explored: dict[tuple[str, int], StoredEpisode],
        needed: dict[tuple[str, int], list[str]],
        agent_v: dict[tuple[str, int], float],
        expert_v: dict[tuple[str, int], float],
        scorer: Policy,
    ) -> dict[tuple[str, int], str | None]:
        """Adaptive MC (module docstring): the step-pair decision of every comparison that
        can form a pair, sampled in rounds; fills `expert_v` / `agent_v` with the means of the
        rollouts taken (replacing nothing exact). Each round reads the store first, so a
        resumed run takes exactly the rollouts the killed one would have taken."""
        n = self.s.mc_samples
        rules, by_id = self.s.rules, {t.task_id: t for t in self.tasks}
        unknown = ValueBound(0.0, 0, 1)  # any mean in [0, 1]
        # (task, j) -> (expert side, agent side): a forced prefix to sample, or an exact value
        todo: dict[tuple[str, int], tuple[list[str] | float, list[str] | float]] = {}
        for (task, j), ep in sorted(explored.items()):
            if (task, j) not in needed and (task, j) not in agent_v:
                continue
            expert = by_id[task]
            if step_decision(expert.reward, ep.reward, unknown, unknown, rules) is None:
                continue  # the rewards alone rule a pair out (τ_traj; the agent may not win)
            last = j + 1 == len(expert.actions)  # a_{j+1} ends the episode: value = reward
            todo[(task, j)] = (
                expert.reward if last else expert.actions[: j + 1],
                agent_v.pop((task, j)) if (task, j) in agent_v else needed[(task, j)],
            )
        # per comparison and side (expert, agent): rewards summed, rollouts taken
        totals = {key: [0.0, 0.0] for key in todo}
        taken = {key: [0, 0] for key in todo}
        decided: dict[tuple[str, int], str | None] = {}

        def bounds(key: tuple[str, int]) -> list[ValueBound]:
            return [
                ValueBound(total, m, n) if isinstance(side, list) else ValueBound.exact(side)
                for side, total, m in zip(todo[key], totals[key], taken[key], strict=True)
            ]

        for _ in range(2 * n + 1):  # each round takes one rollout of every open comparison
            specs = []
            for key in sorted(todo.keys() - decided.keys()):
                task, j = key
                args = (by_id[task].reward, explored[key].reward, *bounds(key), rules)
                verdict = step_decision(*args)
                if verdict != UNDECIDED:
                    decided[key] = verdict
                    continue
                side = 0 if next_rollout(*args) == "expert" else 1
                sample = (0, "expert_mc", task, j + 1) if side == 0 else (iteration, "mc", task, j)
                specs.append(EpisodeSpec(task, tuple(todo[key][side]), (*sample, taken[key][side])))
            if not specs:
                break
            done = self._run(specs, scorer, self._scorer_sampling(), f"adaptive mc it{iteration}")
            for (_, kind, task, k, _), ep in done.items():
                if not -EPS <= ep.reward <= 1 + EPS:
                    raise ValueError(
                        f"adaptive MC: task {task!r}: a scorer rollout ended with reward "
                        f"{ep.reward}, outside [0, 1], which adaptive MC's bounds assume "
                        "(use ipr.mc=fixed)"
                    )
                side = int(kind == "mc")
                key = (task, k if side else k - 1)
                totals[key][side] += ep.reward
                taken[key][side] += 1
        assert decided.keys() == todo.keys(), "all N rollouts taken leave nothing undecided"
        for key in todo:
            task, j = key
            for bound, out, at in zip(
                bounds(key), (expert_v, agent_v), ((task, j + 1), key), strict=True
            ):
                if bound.mean is not None:
                    out[at] = bound.mean
        return decided

    def _model_values(
        self,
        explored: dict[tuple[str, int], StoredEpisode],
        needed: dict[tuple[str, int], list[str]],
        agent_v: dict[tuple[str, int], float],
        valuer: Callable[[list[Item]], list[float]],
    ) -> Predicted:
        """The value model's values for every comparison that can form a step pair; values
        known without it are kept: exact ones (an action that ended its episode) and the
        expert's where all N of its rollouts are in the store already."""
        rules, unknown = self.s.rules, ValueBound(0.0, 0, 1)
        comparisons, known = [], {}
        for key, ep in sorted(explored.items()):
            task, j = key
            expert = self._by_id[task]
            if key not in needed and key not in agent_v:
                continue
            if step_decision(expert.reward, ep.reward, unknown, unknown, rules) is None:
                continue  # the rewards alone rule a pair out
            if j + 1 == len(expert.actions):
                known[(key, 0)] = expert.reward
            elif (value := self._stored_mean((0, "expert_mc", task, j + 1))) is not None:
                known[(key, 0)] = value
            if key in agent_v:
                known[(key, 1)] = agent_v[key]
            expert_item = (expert.dialogue.prefix(j), expert.actions[j])
            agent_item = (ep.dialogue.prefix(j), ep.policy_turns[0].content)
            comparisons.append((key, expert.reward, ep.reward, expert_item, agent_item))
        margin = self.s.value_margin if self.s.step_values == "mixed" else None
        return model_values(comparisons, known, valuer, rules, margin)

    def _stored_mean(self, group: tuple[int, str, str, int]) -> float | None:
        """The value of a group's N rollouts when all of them are in the store."""
        eps = [self.store.get((*group, s)) for s in range(self.s.mc_samples)]
        return None if None in eps else sum(ep.reward for ep in eps) / len(eps)

    def _stats(
        self,
        iteration: int,
        explored: dict[tuple[str, int], StoredEpisode],
        pairs: list[PreferencePair],
        seconds: float,
        before: dict[str, int],
    ) -> dict[str, float]:
        whole = [ep for (_, j), ep in explored.items() if j == 0]
        episodes = [ep for key, ep in self.store.items(iteration) if key[1] in ("explore", "mc")]
        counts = Counter(f"pairs/{p.pair_type}_{p.meta['winner']}" for p in pairs)
        now = self.scorer_totals(iteration)
        scorer = {  # the MC rollouts this iteration ran (not those found in the store)
            "explore/scorer_episodes": now["episodes"] - before["episodes"],
            "explore/scorer_tokens": now["tokens"] - before["tokens"],
            "explore/scorer_seconds": round(self._scorer_seconds, 2),
        }
        if pairs:
            for name in ("episodes", "tokens", "seconds"):
                per = scorer[f"explore/scorer_{name}"] / len(pairs)
                scorer[f"cost/scorer_{name}_per_pair"] = round(per, 3)
        return {
            "iteration": iteration,
            "explore/success": sum(ep.reward >= 1.0 for ep in whole) / max(1, len(whole)),
            "explore/episodes": len(explored),
            "explore/mc_episodes": sum(1 for k, _ in self.store.items(iteration, "mc")),
            # the expert's values are shared by all iterations: rollouts run so far, in all
            "explore/expert_mc_episodes_total": sum(1 for _ in self.store.items(0, "expert_mc")),
            "explore/generated_tokens": sum(ep.generated_tokens for ep in episodes),
            "explore/seconds": round(seconds, 2),
            "explore/episodes_per_s": round(len(episodes) / max(seconds, 1e-9), 3),
            "pairs/outcome": sum(p.pair_type == "outcome" for p in pairs),
            "pairs/step": sum(p.pair_type == "step" for p in pairs),
            **dict(sorted(counts.items())),
            **scorer,
        }
