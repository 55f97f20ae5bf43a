"""Env protocol, lock-step rollouts and batched evaluation on the toy env (scripted policies),
and the HF policy's batched generation on the tiny model."""

import json
import random

import pytest
import torch
from toy_policies import toy_oracle

from ipr_lightning.config import EnvConfig
from ipr_lightning.data.records import Turn
from ipr_lightning.data.render import render_text
from ipr_lightning.envs import build_env
from ipr_lightning.envs.base import build_prompt, parse_react
from ipr_lightning.envs.toy.env import RECEPTACLES, expert_actions
from ipr_lightning.rollout.engine import EpisodeSpec, run_episodes
from ipr_lightning.rollout.evaluate import evaluate
from ipr_lightning.rollout.policy import (
    ACTION_LINE_RE,
    HFPolicy,
    Sampling,
    ScriptedPolicy,
    cut_at_stop,
)


@pytest.mark.parametrize(
    ("text", "thought", "action"),
    [
        ("Thought: go.\nAction: go to shelf 1", "go.", "go to shelf 1"),
        ("Action: look", None, "look"),
        ("thought: a\naction:  open drawer 1  \n", "a", "open drawer 1"),
        ("Thought: Action: is a word\nAction: inventory", "Action: is a word", "inventory"),
        ("I will go to the shelf.", None, None),
        ("Thought: hm\nAction:", "hm", None),
    ],
)
def test_parse_react(text, thought, action):
    parsed = parse_react(text)
    assert (parsed.thought, parsed.action) == (thought, action)


def test_build_prompt_places_the_example_between_ok_and_task():
    example = [Turn("user", "task A"), Turn("assistant", "Action: a")]
    turns = build_prompt("inst", "task B", example)
    assert [t.content for t in turns] == ["inst", "OK", "task A", "Action: a", "task B"]
    with pytest.raises(ValueError, match="in-context example"):
        build_prompt("inst", "task", [Turn("assistant", "x")])


def random_policy(seed: int):
    rng = random.Random(seed)

    def act(history):
        recep = rng.choice(RECEPTACLES)
        return f"Thought: why not.\nAction: {rng.choice(['go to', 'open', 'close'])} {recep}"

    return act


@pytest.fixture
def handle():
    return build_env(EnvConfig(options={"n_valid_unseen": 24}), "valid_unseen")


def test_oracle_scores_100_and_random_near_0(handle, tmp_path):
    policy = ScriptedPolicy(toy_oracle)
    report, episodes = evaluate(
        handle, policy, Sampling(), max_live=8, out_dir=tmp_path, progress=False
    )
    assert report.episodes == 24 and report.success_rate == 1.0 and report.invalid_rate == 0
    # Lock-step: each call serves every live episode, not one episode per call.
    assert sum(policy.calls) == sum(ep.policy_actions for ep in episodes)
    assert max(policy.calls) == 8 and sum(policy.calls) / len(policy.calls) > 6
    lines = (tmp_path / "transcripts.jsonl").read_text().splitlines()
    assert len(lines) == 24 and json.loads(lines[0])["success"] is True
    assert json.loads((tmp_path / "summary.json").read_text())["success_rate"] == 1.0

    report, _ = evaluate(handle, ScriptedPolicy(random_policy(0)), Sampling(), progress=False)
    assert report.success_rate < 0.1 and report.avg_turns == 20  # truncated at max_turns


def test_malformed_output_is_counted_not_fatal(handle):
    report, episodes = evaluate(
        handle,
        ScriptedPolicy(lambda h: "I am not sure."),
        Sampling(),
        max_episodes=3,
        progress=False,
    )
    assert report.malformed_rate == 1.0 and report.invalid_rate == 1.0
    assert all(ep.truncated and ep.turns[-1].role == "assistant" for ep in episodes)
    assert episodes[0].turns[4].content == "Observation: Nothing happens."


def test_forced_prefix_is_replayed_in_the_env(handle):
    """The expert prefix is executed (fresh observations from the env), then the policy acts."""
    task_id = handle.task_ids[0]
    task = handle.make_env().tasks[task_id]
    steps = [f"Thought: {t}\nAction: {a}" for t, a in expert_actions(task)]
    seen = []
    policy = ScriptedPolicy(lambda h: seen.append(list(h)) or steps[len(seen)])
    (ep,) = run_episodes(
        handle.make_env,
        [EpisodeSpec(task_id, forced=tuple(steps[:1]), key=(0, task_id, 1, 0))],
        policy,
        Sampling(),
        handle.build_start,
        progress=False,
    )
    assert ep.n_forced == 1 and ep.key == (0, task_id, 1, 0)
    assert seen[0][4].content.startswith("Observation: You arrive at")  # from the env
    assert ep.terminated and ep.reward == 1.0 and ep.policy_actions == len(steps) - 1


def test_hf_policy_batched_greedy_equals_one_at_a_time(tiny_model_cfg):
    from dataclasses import replace

    from ipr_lightning.data.render import ensure_chat_template, render_text
    from ipr_lightning.models import load_model, load_tokenizer

    cfg = replace(tiny_model_cfg)
    tok = ensure_chat_template(load_tokenizer(cfg))
    model = load_model(cfg)
    histories = [build_prompt("inst", f"task {'x' * k}") for k in (1, 9, 30)]
    sampling = Sampling(max_new_tokens=12)
    batched = HFPolicy(model, tok, batch_size=3).act(histories, sampling)
    single = [HFPolicy(model, tok, batch_size=1).act([h], sampling)[0] for h in histories]
    assert [g.text for g in batched] == [g.text for g in single]
    # ... and equal to a plain HF generate on the rendered prompt, cut at our stop marker.
    ids = tok(
        render_text(tok, histories[1], add_generation_prompt=True),
        return_tensors="pt",
        add_special_tokens=False,
    )
    with torch.no_grad():
        out = model.generate(
            **ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id
        )
    text = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert batched[1].text == cut_at_stop(text)
    assert model.training  # restored after acting
    s = Sampling(temperature=1.0, max_new_tokens=8, seed=3)
    first = HFPolicy(model, tok).act(histories, s)
    assert first == HFPolicy(model, tok).act(histories, s)  # seeded sampling is reproducible


def test_cut_at_stop():
    assert cut_at_stop("Thought: a\nAction: b\nObservation: invented") == "Thought: a\nAction: b"
    assert cut_at_stop("Thought: a\nAction: go to x\nCommands: y", ACTION_LINE_RE) == (
        "Thought: a\nAction: go to x"
    )
    assert cut_at_stop("Thought: a\nAction: go to x\nmore") == "Thought: a\nAction: go to x\nmore"


def test_action_end_stop_marks_only_rows_with_a_finished_action(tiny_model_cfg):
    from ipr_lightning.envs.intercode_sql.env import SQL_ACTION_END
    from ipr_lightning.models import load_tokenizer
    from ipr_lightning.rollout.policy import ActionEndStop

    tok = load_tokenizer(tiny_model_cfg)
    prompt = "Observation: Action: old\n"  # in the prompt part: must not count
    rows = ["Thought: hm.\nAction: go to x\n", "Thought: hm.\nAction: go to", "Thought: a\n"]
    sql = ["Thought: q\nAction: \n```sql\nSELECT 1\n```", "Thought: q\nAction: \n```sql\nSELECT"]
    for pattern, texts, expected in [
        (ACTION_LINE_RE, rows, [True, False, False]),
        (SQL_ACTION_END, rows[:1] + sql, [False, True, False]),  # a SQL action spans lines
    ]:
        ids = [tok(prompt + r, add_special_tokens=False)["input_ids"] for r in texts]
        n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
        width = max(map(len, ids))
        batch = torch.tensor([i + [tok.pad_token_id] * (width - len(i)) for i in ids])
        assert ActionEndStop(tok, n_prompt, pattern)(batch, None).tolist() == expected


def test_row_sampler_draws_from_the_tempered_softmax():
    from ipr_lightning.rollout.policy import RowSampler

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(4000, 1)
    sampler = RowSampler(range(4000), temperature=0.7, top_p=1.0, device=torch.device("cpu"))
    picks = sampler(None, logits).argmax(-1)
    freq = torch.bincount(picks, minlength=4).float() / 4000
    assert torch.allclose(freq, (logits[0] / 0.7).softmax(-1), atol=0.03)
    nucleus = RowSampler(range(4000), temperature=1.0, top_p=0.7, device=torch.device("cpu"))
    assert set(nucleus(None, logits).argmax(-1).tolist()) == {0, 1}  # p = .64, .24, .09: 0.7


def test_seeded_rows_sample_the_same_alone_or_in_any_batch(tiny_model_cfg):
    from ipr_lightning.data.render import ensure_chat_template
    from ipr_lightning.models import load_model, load_tokenizer

    tok = ensure_chat_template(load_tokenizer(tiny_model_cfg))
    policy = HFPolicy(load_model(tiny_model_cfg), tok, batch_size=4)
    histories = [build_prompt("inst", f"task {'y' * k}") for k in (2, 11, 25)]
    s = Sampling(temperature=1.0, max_new_tokens=10)
    together = policy.act(histories, s, seeds=[5, 6, 7])
    alone = [
        policy.act([h], s, seeds=[seed])[0] for h, seed in zip(histories, [5, 6, 7], strict=True)
    ]
    assert [g.text for g in together] == [g.text for g in alone]
    reordered = policy.act(histories[::-1], s, seeds=[7, 6, 5])
    assert [g.text for g in reordered] == [g.text for g in together][::-1]
    others = policy.act(histories, s, seeds=[50, 60, 70])
    assert [g.text for g in others] != [g.text for g in together]


def _tiny_policy_parts(tiny_model_cfg):
    """The tiny model with larger random weights: its outputs depend on the whole context
    (at the default init every prompt decodes to the same text, which would prove nothing)."""
    from ipr_lightning.data.render import ensure_chat_template
    from ipr_lightning.models import load_model, load_tokenizer

    model = load_model(tiny_model_cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.3, generator=gen)
    return model, ensure_chat_template(load_tokenizer(tiny_model_cfg))


def test_kv_reuse_across_turns_gives_the_texts_of_plain_generate(tiny_model_cfg):
    """Three turns of three episodes of different lengths: the reusing policy prefills only
    what it has not seen and still decodes exactly what HF `generate` does from scratch."""
    model, tok = _tiny_policy_parts(tiny_model_cfg)
    reusing = HFPolicy(model, tok, batch_size=2)
    plain = HFPolicy(model, tok, batch_size=3, reuse_kv=False)
    histories = [build_prompt("inst " * 5, f"task {'x' * k}") for k in (1, 9, 30)]
    for turn in range(3):
        for sampling in (Sampling(max_new_tokens=10), Sampling(1.0, max_new_tokens=10, seed=4)):
            before = reusing.cache.prefilled_tokens
            got = reusing.act(histories, sampling)
            assert [g.text for g in got] == [g.text for g in plain.act(histories, sampling)]
            assert len({g.text for g in got}) == 3
            new = reusing.cache.prefilled_tokens - before
        if turn:  # only the last action's tail and the new observation are prefilled
            prompts = [render_text(tok, h, add_generation_prompt=True) for h in histories]
            assert new < 0.5 * sum(len(tok(p)["input_ids"]) for p in prompts) / 3
        histories = [
            [*h, Turn("assistant", g.text or "Action: look"), Turn("user", f"Observation: {turn}")]
            for h, g in zip(histories, got, strict=True)
        ]
    assert reusing.cache.reused_tokens > reusing.cache.prefilled_tokens
    # A fresh episode joins cached ones: prefilled apart (far more new tokens), decoded with them.
    mixed = [*histories, build_prompt("other instruction " * 6, "a new task")]
    sampling = Sampling(max_new_tokens=10)
    assert [g.text for g in reusing.act(mixed, sampling)] == [
        g.text for g in plain.act(mixed, sampling)
    ]


def test_rows_finishing_at_different_steps_decode_as_they_would_alone(tiny_model_cfg):
    """Eight rows stop after 1..8 tokens: finished rows first stay in the batch (decoding
    padding), then are dropped in one copy; every row still gets what it gets alone."""
    from ipr_lightning.rollout.kv import PrefixCache, generate

    model, tok = _tiny_policy_parts(tiny_model_cfg)
    model.eval()
    prompts = [tok(f"task {'z' * k} {k}")["input_ids"] for k in range(8)]
    length = {tuple(p): k + 1 for k, p in enumerate(prompts)}

    def run(batch):
        return generate(
            model,
            batch,
            PrefixCache(max_bytes=0),
            max_new_tokens=12,
            pad_id=tok.pad_token_id,
            eos_ids=set(),
            pick=lambda logits, rows: logits.argmax(-1),
            stop=lambda row, generated: len(generated) >= length[tuple(batch[row])],
        )

    together = run(prompts)
    assert [len(d.tokens) for d in together] == list(range(1, 9))
    assert [d.tokens for d in together] == [run([p])[0].tokens for p in prompts]
    assert len({tuple(d.tokens[:3]) for d in together[2:]}) > 1  # outputs depend on the row


def test_samples_of_one_prompt_share_one_prefill(tiny_model_cfg):
    model, tok = _tiny_policy_parts(tiny_model_cfg)
    policy = HFPolicy(model, tok)
    history = build_prompt("inst", "task y")
    n_prompt = len(tok(render_text(tok, history, add_generation_prompt=True))["input_ids"])
    s = Sampling(temperature=1.0, max_new_tokens=8)
    samples = policy.act([history] * 5, s, seeds=[1, 2, 3, 4, 5])
    assert policy.cache.prefilled_tokens == n_prompt  # once, not five times
    alone = [HFPolicy(model, tok, reuse_kv=False).act([history], s, [i])[0] for i in range(1, 6)]
    assert samples == alone
    assert len({g.text for g in samples}) > 1


def test_prefix_cache_keeps_one_entry_per_sequence_within_its_budget():
    from ipr_lightning.rollout.kv import PrefixCache

    def kv(n):  # one layer, 1 head, 2 dims, float32: 16 bytes per token
        return [(torch.zeros(1, n, 2), torch.zeros(1, n, 2))]

    cache = PrefixCache(max_bytes=16 * 10)
    cache.add(torch.tensor([1, 2, 3]), kv(3))
    assert cache.lookup(torch.tensor([1, 2, 3]))[1] == 2  # the last token is always run
    assert cache.lookup(torch.tensor([1, 2, 9, 9]))[1] == 2
    assert cache.lookup(torch.tensor([7, 2, 3]))[1] == 0
    cache.add(torch.tensor([1, 2, 3, 4, 5]), kv(5))  # extends the first: replaces it
    assert len(cache) == 1 and cache.bytes == 16 * 5
    cache.add(torch.tensor([8, 8, 8, 8]), kv(4))
    assert len(cache) == 2
    cache.lookup(torch.tensor([1, 2, 3, 4, 5, 6]))  # touch: the other entry is now oldest
    cache.add(torch.tensor([6, 6]), kv(2))  # over budget: least recently used goes
    assert cache.lookup(torch.tensor([8, 8, 8, 8, 8]))[1] == 0
    assert cache.lookup(torch.tensor([1, 2, 3, 4, 5, 6]))[1] == 5
    assert cache.bytes <= 16 * 10


def test_inference_context_merges_lora_and_restores_the_weights(tiny_model_cfg):
    from peft.tuners.lora import LoraLayer

    from ipr_lightning.models import POLICY, inference_context, reference_context

    model, tok = _tiny_policy_parts(tiny_model_cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    ids = tok("Thought: hm.\nAction: go to shelf 1", return_tensors="pt")["input_ids"]
    with torch.no_grad(), reference_context(model, POLICY):
        unmerged = model(ids).logits
    with inference_context(model, POLICY):
        assert all(m.merged for m in model.modules() if isinstance(m, LoraLayer))
        merged = model(ids).logits
    assert (merged - unmerged).abs().max() < 1e-3  # float rounding only
    for name, param in model.named_parameters():  # bit for bit: no drift merge after merge
        assert torch.equal(param, before[name]), name
        assert param.requires_grad == flags[name], name
    assert model.training and not any(m.merged for m in model.modules() if isinstance(m, LoraLayer))


def test_running_out_of_memory_shrinks_the_batch_and_keeps_the_outputs(
    tiny_model_cfg, monkeypatch, caplog
):
    """A device that fits 2 rows at a time: a batch of 8 halves until it fits, the run goes
    on with batch size 2 and the seeded samples are the ones an ample device draws."""
    import ipr_lightning.rollout.policy as policy_mod

    model, tok = _tiny_policy_parts(tiny_model_cfg)
    histories = [build_prompt("inst", f"task {k} " + "y" * k) for k in range(8)]
    sampling = Sampling(temperature=1.0, max_new_tokens=6, seed=5)
    ample = HFPolicy(model, tok, batch_size=8).act(histories, sampling)

    decode = policy_mod.generate

    def small_device(model, prompts, *args, **kwargs):
        if len(prompts) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return decode(model, prompts, *args, **kwargs)

    monkeypatch.setattr(policy_mod, "generate", small_device)
    policy = HFPolicy(model, tok, batch_size=8)
    with caplog.at_level("WARNING", logger="ipr_lightning"):
        assert policy.act(histories, sampling) == ample
    assert policy.batch_size == 2
    assert "batch size 8 -> 4" in caplog.text and "batch size 4 -> 2" in caplog.text


def test_out_of_memory_on_one_row_drops_the_cache_once_then_says_so(tiny_model_cfg, monkeypatch):
    import ipr_lightning.rollout.policy as policy_mod

    model, tok = _tiny_policy_parts(tiny_model_cfg)
    policy = HFPolicy(model, tok, batch_size=1)
    history = [build_prompt("inst", "task")]
    policy.act(history, Sampling(max_new_tokens=4))
    assert len(policy.cache) == 1
    calls = []

    def no_memory(*args, **kwargs):
        calls.append(len(policy.cache))
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(policy_mod, "generate", no_memory)
    with pytest.raises(torch.OutOfMemoryError, match="single row with an empty key/value"):
        policy.act(history, Sampling(max_new_tokens=4))
    assert calls == [1, 0]  # tried with the cache, then once more without it
