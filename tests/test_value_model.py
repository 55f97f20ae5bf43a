"""`ipr.step_values` model/mixed: the labels a value model trains on, the pairs built from its
values (toy env, scripted policies), its training and prediction on the tiny model, and
`ipr-fit` end to end with it."""

import json
import signal
import time
from dataclasses import replace

import peft
import pytest
import torch
from test_ipr_explore import SeededScorer, pair_decisions
from test_ipr_fit import resume_to_the_end_with_the_same_pairs, start

from ipr_lightning.config import (
    ConfigError,
    EnvConfig,
    IPRConfig,
    LoraConfig,
    RunConfig,
    TrainerConfig,
    ValueModelConfig,
)
from ipr_lightning.data.records import Turn
from ipr_lightning.data.render import ensure_chat_template
from ipr_lightning.envs import build_env
from ipr_lightning.ipr.experts import expert_tasks
from ipr_lightning.ipr.explore import Exploration, ExploreSettings
from ipr_lightning.ipr.pairs import PairRules
from ipr_lightning.ipr.store import RolloutStore
from ipr_lightning.ipr.value_model import VALUE, StepValueModel
from ipr_lightning.ipr.values import (
    Comparison,
    LabelSet,
    ValueExample,
    held_out_metrics,
    near_threshold,
)
from ipr_lightning.models import build_lora_config, load_model, load_tokenizer
from ipr_lightning.rollout.policy import ScriptedPolicy

LOOK = ScriptedPolicy(lambda h: "Thought: hm.\nAction: look")
RULES = PairRules(tau_step=0.2)


@pytest.fixture
def toy():
    handle = build_env(EnvConfig(max_turns=40, options={"n_train": 4}), "train")
    return handle, expert_tasks(handle, handle.expert())


def fixed_run(toy, path):
    handle, tasks = toy
    settings = ExploreSettings(mc_samples=5, max_live=5, rules=RULES)
    store = RolloutStore(path)
    result = Exploration(handle, tasks, store, settings, progress=False).iteration(
        1, LOOK, SeededScorer()
    )
    return result, store, settings


def oracle(store):
    """A 'value model' that knows every MC value of a store: (prompt, action) -> value."""
    table = {
        (tuple(e.prompt), e.action): e.value for e in LabelSet.of_store(store, 2).examples(store)
    }
    calls = []

    def valuer(items):
        calls.append(len(items))
        return [table[(tuple(prompt), action)] for prompt, action in items]

    return valuer, calls


# --- labels -----------------------------------------------------------------------------------


def test_labels_are_the_mean_rollout_rewards_of_earlier_iterations_and_are_kept(toy, tmp_path):
    result, store, _ = fixed_run(toy, tmp_path / "r.jsonl")
    labels = LabelSet.of_store(store, before=2)
    examples = labels.examples(store)
    # every expert value t = 2..n-1 and every agent value MC was run for
    expert = {(e.task, e.key[3]): e.value for e in examples if e.key[1] == "expert_mc"}
    agent = {(e.task, e.key[3] - 1): e.value for e in examples if e.key[1] != "expert_mc"}
    for row in result.values:
        task, j = row["task"], row["j"]
        if (task, j + 1) in expert:
            assert expert[(task, j + 1)] == pytest.approx(row["expert_value"])
        if row["agent_value"] is not None:
            assert agent[(task, j)] == pytest.approx(row["agent_value"])
    assert all(e.n == 5 for e in examples if e.key[1] in ("mc", "expert_mc"))
    assert LabelSet.of_store(store, before=1).rollouts.keys() == {
        k for k in labels.rollouts if k[1] == "expert_mc"
    }  # iteration 1's own rollouts are not labels for iteration 1
    # the action of an example is the action the rollouts were started after
    e = next(e for e in examples if e.key[1] == "mc")
    assert e.action.endswith("Action: look") and e.prompt[-1].role == "user"

    # fixed when the iteration starts: the store as it was then (some expert rollouts not
    # run yet) gives the saved set; the rollouts added since do not change it
    lines = (tmp_path / "r.jsonl").read_text().splitlines(keepends=True)
    early = [ln for i, ln in enumerate(lines) if i % 3 or '"expert_mc"' not in ln]
    (tmp_path / "early.jsonl").write_text("".join(early))
    at_start = LabelSet.of_store(RolloutStore(tmp_path / "early.jsonl"), before=2)
    at_start.save(tmp_path / "labels.json")
    kept = LabelSet.load(tmp_path / "labels.json")
    assert kept == at_start != labels
    assert kept.examples(store) == at_start.examples(RolloutStore(tmp_path / "early.jsonl"))


def test_held_out_metrics_by_hand():
    def ex(kind, t, value):
        return ValueExample((1 if kind == "mc" else 0, kind, "t", t), (), "a", value, 5)

    expert, agent = ex("expert_mc", 3, 1.0), ex("mc", 3, 0.2)
    # MC: expert wins (rewards 1 vs 0, values 1.0 vs 0.2, gap 0.8 > 0.2); model: 0.5 vs 0.4
    # (gap 0.1): no pair -> the decisions disagree
    c = Comparison(1.0, 0.0, expert, agent)
    out = held_out_metrics([expert, agent], [0.5, 0.4], 0.6, [c], RULES)
    assert out["values/heldout_mse"] == pytest.approx(((0.5 - 1) ** 2 + (0.4 - 0.2) ** 2) / 2)
    assert out["values/heldout_mse_constant"] == pytest.approx((0.4**2 + 0.4**2) / 2)
    assert out["values/heldout_comparisons"] == 1
    assert out["values/heldout_decision_agreement"] == 0.0
    out = held_out_metrics([expert, agent], [0.9, 0.1], 0.6, [c], RULES)
    assert out["values/heldout_decision_agreement"] == 1.0
    # equal rewards: no pair whatever the values, so not counted
    same = held_out_metrics([expert, agent], [0.9, 0.1], 0.6, [replace(c, agent_reward=1)], RULES)
    assert "values/heldout_comparisons" not in same


def test_near_threshold_is_measured_towards_the_side_the_rewards_favour():
    assert near_threshold(1.0, 0.0, 0.7, 0.45, RULES, 0.1)  # gap 0.25, tau 0.2
    assert not near_threshold(1.0, 0.0, 0.9, 0.1, RULES, 0.1)  # gap 0.8: clearly a pair
    assert near_threshold(0.0, 1.0, 0.45, 0.7, RULES, 0.1)  # agent favoured: gap 0.25
    assert not near_threshold(0.0, 1.0, 0.7, 0.45, RULES, 0.1)  # -0.25 from the agent's side


# --- pairs from model values ------------------------------------------------------------------


def test_model_values_build_the_mc_pairs_without_mc_rollouts(toy, tmp_path):
    handle, tasks = toy
    fixed, fixed_store, settings = fixed_run(toy, tmp_path / "fixed.jsonl")
    assert fixed.stats["pairs/step"] > 0
    valuer, calls = oracle(fixed_store)
    store = RolloutStore(tmp_path / "model.jsonl")
    ex = Exploration(handle, tasks, store, replace(settings, step_values="model"), progress=False)
    result = ex.iteration(1, LOOK, SeededScorer(), valuer=valuer)
    assert pair_decisions(result) == pair_decisions(fixed)
    assert not list(store.items(kind="mc")) and not list(store.items(kind="expert_mc"))
    assert any(v["predicted"] for v in result.values)  # step_values.jsonl says which
    assert not any(v["predicted"] for v in fixed.values)
    stats = result.stats
    assert stats["explore/scorer_episodes"] == 0 and stats["explore/scorer_tokens"] == 0
    assert stats["values/predicted"] == sum(calls) > 0 and stats["values/mc_checked"] == 0
    assert fixed.stats["explore/scorer_episodes"] == len(list(fixed_store.items(kind="mc"))) + len(
        list(fixed_store.items(kind="expert_mc"))
    )
    per_pair = fixed.stats["explore/scorer_episodes"] / len(fixed.pairs)
    assert fixed.stats["cost/scorer_episodes_per_pair"] == pytest.approx(per_pair, abs=1e-3)


@pytest.mark.parametrize("mc", ["fixed", "adaptive"])
def test_mixed_checks_with_mc_exactly_the_decisions_near_tau(toy, tmp_path, mc):
    handle, tasks = toy
    fixed, _, settings = fixed_run(toy, tmp_path / "fixed.jsonl")
    flat = lambda items: [0.5] * len(items)  # noqa: E731
    # Predicted gaps: 0 (0.2 from tau) where both values are predicted; 0.5 (0.3 from tau)
    # where the expert's action ends the episode (its value is exact: 1.0).
    n_actions = {t.task_id: len(t.actions) for t in tasks}
    for margin, checked in ((0.35, True), (0.1, False)):
        store = RolloutStore(tmp_path / f"mixed{margin}.jsonl")
        s = replace(settings, mc=mc, step_values="mixed", value_margin=margin)
        result = Exploration(handle, tasks, store, s, progress=False).iteration(
            1, LOOK, SeededScorer(), valuer=flat
        )
        stats = result.stats
        if checked:  # all near tau: MC decides every one, as without the model
            assert stats["values/mc_checked"] == stats["values/comparisons"] > 0
            assert stats["values/predicted"] == 0  # every prediction replaced by MC's value
            assert pair_decisions(result) == pair_decisions(fixed)
            assert stats["values/mc_checked_agreement"] < 1.0  # the flat model says no pair
            assert stats["explore/scorer_episodes"] > 0
        else:  # none near tau: no MC; a step pair only where the expert's value is exact
            assert stats["values/mc_checked"] == 0 and stats["explore/scorer_episodes"] == 0
            assert stats["values/predicted"] > 0
            steps = [p for p in result.pairs if p.pair_type == "step"]
            assert steps and all(p.meta["step"] == n_actions[p.meta["task_id"]] - 1 for p in steps)


# --- the model on the tiny Llama --------------------------------------------------------------


def examples_by_action(n):
    """Values that depend on the action only: `go` 0.9, `look` 0.1."""
    prompt = (Turn("user", "task: find the key"),)
    out = []
    for i in range(n):
        good = i % 2 == 0
        action = f"Action: {'go' if good else 'look'} {i % 5}"
        out.append(ValueExample((1, "mc", f"t{i}", 1), prompt, action, 0.9 if good else 0.1, 5))
    return out


@pytest.mark.parametrize("lora", [True, False])
def test_value_model_learns_and_leaves_the_policy_untouched(tiny_model_cfg, lora):
    cfg = replace(tiny_model_cfg, lora=replace(tiny_model_cfg.lora, enabled=lora))
    tokenizer = ensure_chat_template(load_tokenizer(cfg))
    policy = load_model(cfg)
    sft_copy = None
    if lora:
        from ipr_lightning.models import add_reference_adapter

        add_reference_adapter(policy, "policy", "sft")
    else:
        sft_copy = load_model(cfg).requires_grad_(False)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    flags = {n: p.requires_grad for n, p in policy.named_parameters()}
    rng = torch.get_rng_state()

    model = StepValueModel.build(policy, sft_copy, LoraConfig(r=4), tokenizer, 64, seed=0)
    train, test = examples_by_action(40), examples_by_action(10)
    fit = model.fit(train, epochs=20, lr=1e-2, batch_size=8, seed=0, progress=False)
    preds = model.predict([(e.prompt, e.action) for e in test], batch_size=4)
    assert fit["train_examples"] == 40
    go = [p for p, e in zip(preds, test, strict=True) if e.value > 0.5]
    look = [p for p, e in zip(preds, test, strict=True) if e.value < 0.5]
    assert min(go) > max(look)
    metrics = held_out_metrics(test, preds, 0.5, [], RULES)
    assert metrics["values/heldout_mse"] < 0.5 * metrics["values/heldout_mse_constant"]
    # the same labels and seed give the same model (a resumed iteration rebuilds it)
    model.close()
    again = StepValueModel.build(policy, sft_copy, LoraConfig(r=4), tokenizer, 64, seed=0)
    again.fit(train, epochs=20, lr=1e-2, batch_size=8, seed=0, progress=False)
    assert again.predict([(e.prompt, e.action) for e in test], 4) == preds
    again.close()

    assert torch.equal(torch.get_rng_state(), rng)  # the policy's random state is untouched
    after = dict(policy.named_parameters())
    assert after.keys() == before.keys()  # the value adapter is gone again
    assert all(torch.equal(after[n], before[n]) for n in before)
    assert {n: p.requires_grad for n, p in after.items()} == flags
    if lora:
        assert VALUE not in policy.peft_config and policy.active_adapter == "policy"


def test_lora_config_of_the_value_model_targets_the_same_layers():
    # full fine-tuning builds LoRA from model.lora's shape, whatever `enabled` says
    config = build_lora_config(LoraConfig(enabled=False, r=4))
    assert isinstance(config, peft.LoraConfig) and config.r == 4


# --- ipr-fit end to end -----------------------------------------------------------------------


MIXED = ("ipr.step_values=mixed", "ipr.value_model.min_examples=1", "ipr.value_model.epochs=1")


@pytest.fixture(scope="module")
def mixed_run(tiny_model_cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("mixed") / "run"
    proc = start(out, tiny_model_cfg.cache_dir, *MIXED)
    _, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr[-4000:]
    return out


def test_ipr_fit_with_a_mixed_value_model(mixed_run):
    out = mixed_run
    first = json.loads((out / "iter_1" / "stats.json").read_text())
    second = json.loads((out / "iter_2" / "stats.json").read_text())
    assert first["values/train_examples"] == 0 and "values/predicted" not in first  # MC
    assert second["values/train_examples"] > 0 and second["values/fit_seconds"] > 0
    assert second["values/comparisons"] == second["values/predicted"] > 0
    labels = LabelSet.load(out / "iter_2" / "value_labels.json")
    assert labels.rollouts and all(k[0] < 2 for k in labels.rollouts)
    assert first["explore/scorer_episodes"] > 0 and "explore/scorer_seconds" in second


def _exploring_iteration_2(out):
    store = out / "rollouts.jsonl"
    return (out / "iter_2" / "value_labels.json").is_file() and '[2, "explore"' in (
        store.read_text() if store.is_file() else ""
    )


def test_a_run_killed_while_its_value_model_values_resumes_to_the_same_pairs(
    mixed_run, tiny_model_cfg, tmp_path
):
    out = tmp_path / "killed"
    proc = start(out, tiny_model_cfg.cache_dir, *MIXED)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None and not _exploring_iteration_2(out):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not (out / "iter_2" / "pairs.json").exists(), "killed too late"
    resume_to_the_end_with_the_same_pairs(out, mixed_run, tiny_model_cfg.cache_dir, *MIXED)
    stats = [json.loads((d / "iter_2" / "stats.json").read_text()) for d in (mixed_run, out)]
    for key in ("values/heldout_mse", "values/train_mse", "explore/scorer_episodes"):
        assert stats[0].get(key) == stats[1].get(key), key


def test_step_values_settings_are_checked():
    with pytest.raises(ConfigError, match="step_values=model/mixed is not supported"):
        RunConfig(trainer=TrainerConfig(strategy="fsdp"), ipr=IPRConfig(step_values="model"))
    with pytest.raises(ConfigError, match="ipr.step_values must be one of"):
        IPRConfig(step_values="learned")
    with pytest.raises(ConfigError, match="ipr.value_model.lr"):
        IPRConfig(value_model=ValueModelConfig(lr=0))


def test_scorer_cost_counts_the_rollouts_the_iteration_ran_resumed_or_not(toy, tmp_path):
    handle, tasks = toy
    path = tmp_path / "r.jsonl"
    result, store, settings = fixed_run(toy, path)
    ran = result.stats["explore/scorer_episodes"]
    assert ran == sum(1 for key, _ in store.items() if key[1] in ("mc", "expert_mc")) > 0
    tokens = sum(ep.generated_tokens for key, ep in store.items() if key[1] != "explore")
    assert result.stats["explore/scorer_tokens"] == tokens > 0

    def again(**kw):
        ex = Exploration(handle, tasks, RolloutStore(path), settings, progress=False)
        return ex.iteration(1, LOOK, SeededScorer(), **kw).stats

    assert again()["explore/scorer_episodes"] == 0  # all found in the store: none run
    # a resumed iteration counts from where it first started (the callback's started.json)
    assert again(scorer_before={"episodes": 0, "tokens": 0})["explore/scorer_episodes"] == ran
