"""IPR data generation on the toy env with scripted policies: pair rules, MC values, replayed
prefixes, the rollout store and resumption."""

import json
import random
from collections import Counter
from dataclasses import replace

import pytest
from toy_policies import toy_oracle

from ipr_lightning.config import EnvConfig
from ipr_lightning.data.records import Turn
from ipr_lightning.envs import build_env
from ipr_lightning.ipr.experts import expert_tasks
from ipr_lightning.ipr.explore import Exploration, ExploreSettings
from ipr_lightning.ipr.pairs import (
    UNDECIDED,
    PairRules,
    Side,
    ValueBound,
    next_rollout,
    outcome_pair,
    step_decision,
    step_pair,
    step_winner,
)
from ipr_lightning.ipr.store import RolloutStore
from ipr_lightning.rollout.policy import Generation, Policy, ScriptedPolicy

A, B = [Turn("assistant", "Action: a")], [Turn("assistant", "Action: b")]
PROMPT = [Turn("user", "inst"), Turn("assistant", "OK"), Turn("user", "task")]


# --- pair rules on hand-made reward tables ----------------------------------------------------


@pytest.mark.parametrize(
    ("expert", "agent", "tau", "winner"),
    [
        (1.0, 0.0, 0.01, "expert"),
        (0.3, 0.9, 0.01, "agent"),  # the higher reward is chosen, whoever has it
        (1.0, 1.0, 0.01, None),  # tie
        (0.51, 0.5, 0.01, None),  # a difference equal to tau makes no pair (up to fp)
        (0.6, 0.5, 0.05, "expert"),
    ],
)
def test_outcome_pairs(expert, agent, tau, winner):
    pair = outcome_pair("t", PROMPT, Side(A, expert), Side(B, agent), PairRules(tau_traj=tau), 1)
    if winner is None:
        assert pair is None
        return
    assert pair.pair_type == "outcome" and pair.meta["winner"] == winner
    chosen = A if winner == "expert" else B
    assert pair.chosen == chosen and pair.prompt == PROMPT and pair.iteration == 1
    assert pair.chosen_reward == max(expert, agent)


@pytest.mark.parametrize(
    ("rewards", "values", "agent_wins", "winner"),
    [
        ((1.0, 0.0), (0.8, 0.2), True, "expert"),
        ((1.0, 0.0), (0.6, 0.2), True, None),  # value gap 0.4 <= tau_step 0.5
        ((1.0, 0.0), (0.7, 0.2), True, None),  # value gap exactly tau_step
        ((1.0, 0.0), (0.2, 0.8), True, None),  # sides disagree: reward says expert, value agent
        ((0.0, 1.0), (0.0, 0.6), True, "agent"),
        ((0.0, 1.0), (0.0, 0.6), False, None),  # the paper: expert wins only
        ((1.0, 1.0), (1.0, 0.0), True, None),  # final rewards tie
    ],
)
def test_step_pair_rule(rewards, values, agent_wins, winner):
    rules = PairRules(tau_traj=0.01, tau_step=0.5, agent_wins=agent_wins)
    expert, agent = Side(A, rewards[0], values[0]), Side(B, rewards[1], values[1])
    assert step_winner(expert, agent, rules) == winner


def test_step_pair_continuation_or_single_action():
    long_a = [*A, Turn("user", "Observation: x"), Turn("assistant", "Action: a2")]
    expert, agent = Side(long_a, 1.0, 0.9), Side(B, 0.0, 0.1)
    whole = step_pair("t", 2, PROMPT, expert, agent, PairRules(), 3)
    assert whole.chosen == long_a and whole.rejected == B and whole.id == "it3/t/step2"
    assert whole.meta == {
        "task_id": "t",
        "step": 2,
        "winner": "expert",
        "chosen_value": 0.9,
        "rejected_value": 0.1,
    }
    one = step_pair("t", 2, PROMPT, expert, agent, PairRules(step_completion="action"), 3)
    assert one.chosen == A and one.rejected == B


# --- exploration, MC values and pairs through the env ----------------------------------------


@pytest.fixture
def toy():
    handle = build_env(EnvConfig(max_turns=40, options={"n_train": 4}), "train")
    return handle, expert_tasks(handle, handle.expert())


class CountingScorer(Policy):
    """Of the N rollouts that start from the same history, the first `good` follow the
    observation-only oracle and the others say `look` until the turn limit."""

    def __init__(self, good: int) -> None:
        self.good, self.seen = good, Counter()

    def act(self, histories, sampling, seeds=None):
        out = []
        for h in histories:
            key = tuple(t.content for t in h)
            i, self.seen[key] = self.seen[key], self.seen[key] + 1
            lost = any(t.content.endswith("Action: look") for t in h)
            text = toy_oracle(h) if i < self.good and not lost else "Thought: hm.\nAction: look"
            out.append(Generation(text, 3))
        return out


def test_mc_value_is_the_mean_of_the_n_outcomes(toy, tmp_path):
    handle, tasks = toy
    settings = ExploreSettings(mc_samples=5)
    ex = Exploration(handle, tasks, RolloutStore(tmp_path / "r.jsonl"), settings, progress=False)
    values = ex.expert_values(CountingScorer(good=2))
    for t in tasks:
        n = len(t.actions)
        assert [values[(t.task_id, k)] for k in range(2, n)] == [0.4] * (n - 2)
        assert values[(t.task_id, n)] == 1.0  # the last action wins: its own reward
        assert (t.task_id, 1) not in values  # a_1 is never compared: not paid for
    assert len(ex.store) == 5 * sum(len(t.actions) - 2 for t in tasks)


def test_prefix_is_replayed_in_the_env_not_copied(toy, tmp_path, caplog):
    handle, tasks = toy
    task = tasks[0]
    steps = tuple(
        replace(s, observation="Observation: FORGED") if s.observation else s
        for s in task.dialogue.steps
    )
    forged = replace(task, dialogue=replace(task.dialogue, steps=steps))
    ex = Exploration(
        handle,
        [forged],
        RolloutStore(tmp_path / "r.jsonl"),
        ExploreSettings(mc_samples=1),
        progress=False,
    )
    explored = ex.explore(1, ScriptedPolicy(toy_oracle))
    ep = explored[(task.task_id, 2)]
    prefix = ep.dialogue.prefix(2)
    assert ep.dialogue.actions[:2] == task.actions[:2]
    assert prefix == task.dialogue.prefix(2)  # the env's own observations, not the record's
    assert "FORGED" not in json.dumps([t.content for t in ep.turns])
    with caplog.at_level("WARNING"):
        ex.iteration(1, ScriptedPolicy(toy_oracle), CountingScorer(1))
    assert "differ from the expert record" in caplog.text


def test_iteration_builds_the_expected_pairs_and_resumes_from_the_store(toy, tmp_path):
    handle, tasks = toy
    # Explorer: always `look` -> every explored episode fails (reward 0). Scorer: the first of
    # 2 rollouts succeeds, unless the history already holds a `look` -> expert steps 0.5,
    # explored actions 0.0. So: 4 outcome pairs, and a step pair wherever value gap 0.5 > tau.
    look = ScriptedPolicy(lambda h: "Thought: hm.\nAction: look")
    settings = ExploreSettings(mc_samples=2, rules=PairRules(tau_traj=0.01, tau_step=0.4))
    path = tmp_path / "rollouts.jsonl"
    ex = Exploration(handle, tasks, RolloutStore(path), settings, progress=False)
    result = ex.iteration(1, look, CountingScorer(good=1), out_dir=tmp_path)
    n_steps = sum(len(t.actions) - 1 for t in tasks)
    stats = result.stats
    assert stats["pairs/outcome"] == 4 and stats["pairs/step"] == n_steps
    assert stats["explore/success"] == 0.0 and stats["pairs/step_expert"] == n_steps
    step = next(p for p in result.pairs if p.pair_type == "step")
    assert step.meta["chosen_value"] == 0.5 and step.meta["rejected_value"] == 0.0
    assert step.rejected[0].content.endswith("Action: look")
    assert (tmp_path / "iter_1/pairs.json").is_file()

    # A second run over the same store runs nothing and gives the same pairs.
    calls = ScriptedPolicy(lambda h: "never")
    again = Exploration(handle, tasks, RolloutStore(path), settings, progress=False)
    assert again.iteration(1, calls, calls).pairs == result.pairs and calls.calls == []


class SeededScorer(Policy):
    """Follows the oracle on turns whose sampling seed is not a multiple of 4, else gets lost
    (`look` from then on): outcomes depend on the episode's seeds only, not on batching."""

    def act(self, histories, sampling, seeds=None):
        assert seeds is not None and sampling.temperature > 0
        out = []
        for h, seed in zip(histories, seeds, strict=True):
            lost = seed % 4 == 0 or any(t.content.endswith("Action: look") for t in h)
            out.append(Generation("Thought: hm.\nAction: look" if lost else toy_oracle(h), 3))
        return out


def test_a_torn_store_resumes_to_the_same_episodes_and_pairs(toy, tmp_path):
    handle, tasks = toy
    look = ScriptedPolicy(lambda h: "Thought: hm.\nAction: look")
    settings = ExploreSettings(mc_samples=3, max_live=5, rules=PairRules(tau_step=0.2))
    path = tmp_path / "rollouts.jsonl"
    full = Exploration(handle, tasks, RolloutStore(path), settings, progress=False)
    result = full.iteration(1, look, SeededScorer())
    assert result.stats["pairs/step"] > 0
    lines = path.read_text().splitlines(keepends=True)
    # Killed mid-MC: the last third of the episodes never finished, the last line is torn.
    keep = len(lines) * 2 // 3
    path.write_text("".join(lines[:keep]) + lines[keep][: len(lines[keep]) // 2])
    torn = RolloutStore(path)
    assert torn.recovered_torn_line and len(torn) == keep
    resumed = Exploration(handle, tasks, torn, replace(settings, max_live=2), progress=False)
    assert resumed.iteration(1, look, SeededScorer()).pairs == result.pairs
    again = sorted(path.read_text().splitlines(keepends=True))
    assert again == sorted(lines)  # the same episodes, none lost, none duplicated


def test_store_refuses_to_record_an_episode_twice(toy, tmp_path):
    handle, tasks = toy
    ex = Exploration(
        handle,
        tasks[:1],
        RolloutStore(tmp_path / "r.jsonl"),
        ExploreSettings(mc_samples=1),
        progress=False,
    )
    explored = ex.explore(1, ScriptedPolicy(toy_oracle))
    key = (1, "explore", tasks[0].task_id, 0, 0)
    assert explored[(tasks[0].task_id, 0)].reward == 1.0
    from ipr_lightning.rollout.engine import Episode

    with pytest.raises(KeyError, match="already"):
        ex.store.add(key, Episode(tasks[0].task_id, PROMPT))


def test_a_damaged_line_in_the_middle_of_the_store_loses_nothing_after_it(toy, tmp_path, caplog):
    """It used to cut the file at the first unparseable line, silently: every later episode
    was lost. Now only a torn tail is cut; a damaged line is skipped and named."""
    handle, tasks = toy
    path = tmp_path / "rollouts.jsonl"
    ex = Exploration(handle, tasks, RolloutStore(path), ExploreSettings(mc_samples=1), False)
    ex.explore(1, ScriptedPolicy(toy_oracle))
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = '{"key": [1, "explore", "tor\n'  # damaged, but newline-terminated
    path.write_text("".join(lines) + lines[-1][:10])  # and a torn tail
    with caplog.at_level("WARNING"):
        store = RolloutStore(path)
    assert store.skipped_lines == [3] and "line 3" in caplog.text
    assert len(store) == len(lines) - 1  # every other episode kept
    assert store.recovered_torn_line and path.read_text() == "".join(lines)


@pytest.mark.parametrize(
    ("pair_types", "explored_j", "mc"),
    [(("outcome",), "j=0", False), (("step",), "j>=1", True), (("outcome", "step"), "all", True)],
)
def test_pair_types_decide_what_is_explored_and_paid_for(toy, tmp_path, pair_types, explored_j, mc):
    """ETO's setting (outcome only) explores whole trajectories and runs no MC rollout; step
    pairs alone skip j = 0; the step values of every explored step are kept for diagnostics."""
    handle, tasks = toy
    look = ScriptedPolicy(lambda h: "Thought: hm.\nAction: look")
    rules = PairRules(tau_traj=0.01, tau_step=0.4)
    settings = ExploreSettings(mc_samples=2, rules=rules, pair_types=pair_types)
    ex = Exploration(handle, tasks, RolloutStore(tmp_path / "r.jsonl"), settings, progress=False)
    result = ex.iteration(1, look, CountingScorer(good=1))
    js = {key[3] for key, _ in ex.store.items(1, "explore")}
    every = {j for t in tasks for j in range(len(t.actions))}
    assert js == {"all": every, "j>=1": every - {0}, "j=0": {0}}[explored_j]
    kinds = {key[1] for key, _ in ex.store.items()}
    assert ("expert_mc" in kinds) is mc and ("mc" in kinds) is mc
    assert {p.pair_type for p in result.pairs} == set(pair_types)
    if mc:
        assert len(result.values) == sum(len(t.actions) - 1 for t in tasks)
        v = result.values[0]
        assert v["expert_value"] == 0.5 and v["agent_value"] == 0.0 and v["agent_reward"] == 0.0
    else:
        assert result.values == []


# --- adaptive MC ---------------------------------------------------------------------------


def test_adaptive_stopping_never_changes_a_decision_on_synthetic_value_streams():
    """Streams of rollout rewards with known means (binary and graded): wherever the stopping
    rule settles a comparison after m of N rollouts, the full N give the same decision, and
    after all N it is always settled."""
    rng = random.Random(0)
    settled_early = 0
    for trial in range(4000):
        n = rng.randint(1, 8)
        graded = trial % 2 == 1
        p_e, p_a = rng.random(), rng.random()

        def draw(p: float, graded: bool = graded) -> float:
            return round(rng.random() * p * 2, 2) if graded else float(rng.random() < p)

        e = [min(1.0, draw(p_e)) for _ in range(n)]
        a = [min(1.0, draw(p_a)) for _ in range(n)]
        rewards = rng.choice([(1.0, 0.0), (0.0, 1.0), (0.6, 0.1), (1.0, 1.0)])
        rules = PairRules(
            tau_traj=0.01, tau_step=rng.choice([0.0, 0.1, 0.2, 0.5]), agent_wins=trial % 3 > 0
        )
        final = step_winner(Side(A, rewards[0], sum(e) / n), Side(B, rewards[1], sum(a) / n), rules)
        for m in range(n + 1):
            got = step_decision(
                *rewards, ValueBound(sum(e[:m]), m, n), ValueBound(sum(a[:m]), m, n), rules
            )
            if got != UNDECIDED:
                assert got == final, (trial, m, e, a, rewards, rules)
                settled_early += m < n
            assert m < n or got != UNDECIDED
    assert settled_early > 1000  # the rule does stop early, often


def pair_decisions(result):
    return [(p.id, p.chosen, p.rejected, p.meta["winner"]) for p in result.pairs]


def test_adaptive_mc_builds_the_fixed_pairs_from_fewer_rollouts_and_resumes(toy, tmp_path):
    handle, tasks = toy
    look = ScriptedPolicy(lambda h: "Thought: hm.\nAction: look")
    fixed = ExploreSettings(mc_samples=5, max_live=5, rules=PairRules(tau_step=0.2))
    adaptive = replace(fixed, mc="adaptive")
    runs = {}
    for name, settings in (("fixed", fixed), ("adaptive", adaptive)):
        store = RolloutStore(tmp_path / f"{name}.jsonl")
        ex = Exploration(handle, tasks, store, settings, progress=False)
        runs[name] = (ex.iteration(1, look, SeededScorer()), len(store))
    (fixed_result, fixed_n), (adaptive_result, adaptive_n) = runs["fixed"], runs["adaptive"]
    assert fixed_result.stats["pairs/step"] > 0
    assert pair_decisions(adaptive_result) == pair_decisions(fixed_result)
    explored = sum(len(t.actions) for t in tasks)  # explore episodes, the same in both
    assert adaptive_n - explored < fixed_n - explored  # fewer MC rollouts
    assert (
        adaptive_result.stats["explore/expert_mc_episodes_total"]
        < (fixed_result.stats["explore/expert_mc_episodes_total"])
    )

    # Killed mid-MC: a resumed adaptive run takes exactly the same rollouts.
    path = tmp_path / "adaptive.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    keep = len(lines) * 2 // 3
    path.write_text("".join(lines[:keep]) + lines[keep][: len(lines[keep]) // 2])
    resumed = Exploration(
        handle, tasks, RolloutStore(path), replace(adaptive, max_live=2), progress=False
    )
    assert pair_decisions(resumed.iteration(1, look, SeededScorer())) == pair_decisions(
        adaptive_result
    )
    assert sorted(path.read_text().splitlines(keepends=True)) == sorted(lines)


def test_adaptive_mc_refuses_rewards_outside_its_bounds(toy, tmp_path):
    handle, tasks = toy
    big = replace(handle, make_env=lambda: DoubledReward(handle.make_env()))
    look = ScriptedPolicy(lambda h: "Thought: hm.\nAction: look")
    settings = ExploreSettings(mc_samples=3, rules=PairRules(tau_step=0.2), mc="adaptive")
    ex = Exploration(big, tasks, RolloutStore(tmp_path / "r.jsonl"), settings, progress=False)
    with pytest.raises(ValueError, match=r"reward 2\.0, outside \[0, 1\].*ipr.mc=fixed"):
        ex.iteration(1, look, CountingScorer(good=3))


class DoubledReward:
    """A toy env whose winning reward is 2 (out of adaptive MC's [0, 1])."""

    def __init__(self, env) -> None:
        self.env = env

    def __getattr__(self, name):
        return getattr(self.env, name)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, 2 * reward, terminated, truncated, info


def test_ipr_mc_mode_is_checked():
    from ipr_lightning.config import ConfigError, IPRConfig

    with pytest.raises(ConfigError, match="ipr.mc must be one of"):
        IPRConfig(mc="sometimes")


def test_next_rollout_samples_the_open_side_and_aims_at_the_likelier_answer():
    rules = PairRules(tau_step=0.5)
    open_, exact = ValueBound(0.0, 0, 5), ValueBound.exact(0.0)
    assert next_rollout(1.0, 0.0, exact, open_, rules) == "agent"
    assert next_rollout(1.0, 0.0, open_, exact, rules) == "expert"
    done = ValueBound(3.0, 5, 5)
    assert next_rollout(1.0, 0.0, done, open_, rules) == "agent"
    # (smoothed means (total + 0.5) / (taken + 1); expert ahead on reward, tau_step 0.5)
    # expert 0.625, agent 0.1: a pair looks likely; the agent's next 0 (p 0.9) is likelier
    # to settle it than the expert's next 1 (p 0.625)
    bound = ValueBound
    assert next_rollout(1.0, 0.0, bound(2.0, 3, 5), bound(0.0, 4, 5), rules) == "agent"
    # expert 0.167, agent 0.375: no pair looks likely; the expert's next 0 (p 0.833) beats
    # the agent's next 1 (p 0.375)
    assert next_rollout(1.0, 0.0, bound(0.0, 2, 5), bound(1.0, 3, 5), rules) == "expert"
    # expert 0.625, agent 0.875: no pair; the agent's next 1 (p 0.875) beats the expert's 0
    assert next_rollout(1.0, 0.0, bound(2.0, 3, 5), bound(3.0, 3, 5), rules) == "agent"
    # the agent ahead on reward: the same with the sides' roles swapped
    assert next_rollout(0.0, 1.0, bound(0.0, 4, 5), bound(2.0, 3, 5), rules) == "expert"
