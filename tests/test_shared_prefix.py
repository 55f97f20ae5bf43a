"""Preference pairs packed with their prompt once (`SharedPrefixCollator`): the same per-pair
log-probs and the same LoRA gradients as two plain rows, for prompts of different lengths in
one batch, for truncated pairs, with the SDPA and the eager kernel; and the packed layout."""

from dataclasses import replace

import pytest
import torch

from ipr_lightning.config import LossConfig, OptimConfig
from ipr_lightning.data.datasets import (
    PairCollator,
    PairDataset,
    RenderedPair,
    SharedPrefixCollator,
)
from ipr_lightning.data.records import PreferencePair, Turn
from ipr_lightning.data.render import Rendered, ensure_chat_template
from ipr_lightning.lightning.module import IPRModule
from ipr_lightning.models import load_tokenizer

START = [
    Turn("user", "You are in a house. Act as: Thought: ...\nAction: ..."),
    Turn("assistant", "OK"),
    Turn("user", "Your task is to: put a mug on shelf 1."),
]


def history(n: int) -> list[Turn]:
    turns = []
    for i in range(n):
        turns += [
            Turn("assistant", f"Thought: look around {i}.\nAction: go to cabinet {i}"),
            Turn("user", f"Observation: On the cabinet {i}, you see a cup {i} and a spoon."),
        ]
    return turns


def pairs() -> list[PreferencePair]:
    good = Turn("assistant", "Thought: the mug is here.\nAction: take mug 1 from shelf 2")
    bad = Turn("assistant", "Thought: hm.\nAction: look")
    out = [
        PreferencePair(
            f"step{n}", START + history(n), [good], [bad, Turn("user", "Observation: x"), bad],
            pair_type="step", prompt_start=3,
        )
        for n in (0, 1, 3, 6)
    ]  # fmt: skip
    out.append(  # an outcome pair: whole trajectories after the start
        PreferencePair("outcome", START, history(2) + [good], history(1) + [bad], prompt_start=3)
    )
    return out


@pytest.fixture(scope="module")
def tokenizer(tiny_model_cfg):
    return ensure_chat_template(load_tokenizer(tiny_model_cfg))


def trained_module(model_cfg, tokenizer) -> IPRModule:
    torch.manual_seed(0)
    module = IPRModule(model_cfg, OptimConfig(lr=1e-2), LossConfig())
    module.configure_model()
    module.log = module.log_dict = lambda *a, **k: None
    rows = PairDataset(pairs(), tokenizer, 512).rows
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=5e-2)
    for _ in range(2):  # LoRA weights away from zero, so the adapters matter below
        opt.zero_grad()
        module._loss(PairCollator(tokenizer.pad_token_id)(rows), "train").backward()
        opt.step()
    module.eval()
    return module


def logps_and_grads(module, batch):
    """Per-token log-probs (by sequence, in token order), tokens per sequence, and the
    gradients of a weighted sum of the per-pair log-probs."""
    module.zero_grad()
    values, row_index, counts = module.token_logps(batch)
    order = torch.sort(row_index, stable=True).indices
    logps = values.new_zeros(counts.numel()).index_add(0, row_index, values)
    (logps * torch.linspace(0.5, 1.5, logps.numel())).sum().backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    return values[order].detach(), counts, grads


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("max_length", [512, 200])
def test_packed_pairs_give_the_plain_log_probs_and_gradients(
    tiny_model_cfg, tokenizer, attn, max_length
):
    module = trained_module(replace(tiny_model_cfg, attn_implementation=attn), tokenizer)
    data = PairDataset(pairs(), tokenizer, max_length)
    if max_length == 200:  # the short rows: history dropped, and a row cut on the right
        assert data.stats.history_shortened and data.stats.cut_right
    rows = data.rows
    assert len({r.shared for r in rows}) >= 2  # prompts of different lengths in one batch
    plain = logps_and_grads(module, PairCollator(tokenizer.pad_token_id)(rows))
    packed_batch = SharedPrefixCollator(tokenizer.pad_token_id)(rows)
    packed = logps_and_grads(module, packed_batch)
    assert packed[0].shape == plain[0].shape  # the same trained tokens, token by token:
    assert (packed[0] - plain[0]).abs().max() <= 1e-5, (packed[0] - plain[0]).abs().max()
    assert packed[1].tolist() == plain[1].tolist()  # trained tokens per side
    assert plain[2].keys() == packed[2].keys() and any("lora_" in n for n in plain[2])
    for name, grad in plain[2].items():
        assert torch.allclose(packed[2][name], grad, atol=1e-5, rtol=1e-4), name
    # one packed row per pair, shorter than the two plain rows it replaces
    assert packed_batch["input_ids"].shape[0] == len(rows)
    assert packed_batch["input_ids"].numel() < 2 * len(rows) * max(
        len(r.chosen.input_ids) for r in rows
    )


def test_the_packed_layout():
    """prompt [5, 6, 7] + chosen [8, 9] / rejected [10, 11, 12]; trained tokens 8, 9 and
    11, 12 (10 is an untrained header token)."""
    ign = -100
    row = RenderedPair(
        Rendered([5, 6, 7, 8, 9], [ign, ign, ign, 8, 9], False),
        Rendered([5, 6, 7, 10, 11, 12], [ign, ign, ign, ign, 11, 12], False),
        True, None, None,
    )  # fmt: skip
    short = RenderedPair(
        Rendered([5, 3], [ign, 3], False), Rendered([5, 4], [ign, 4], False), False, 1.0, 2.0
    )
    assert row.shared == 3 and short.shared == 1
    batch = SharedPrefixCollator(pad_id=0)([row, short])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10, 11, 12], [5, 3, 4, 0, 0, 0, 0, 0]]
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 3, 4, 3, 4, 5]
    assert batch["position_ids"][1].tolist()[:3] == [0, 1, 1]
    allowed = batch["pair_mask"][0, 0].int().tolist()
    assert allowed[4] == [1, 1, 1, 1, 1, 0, 0, 0]  # chosen: prompt and itself
    assert allowed[6] == [1, 1, 1, 0, 0, 1, 1, 0]  # rejected: prompt and itself, not chosen
    assert batch["pair_mask"][1, 0, 5].int().tolist() == [0, 0, 0, 0, 0, 1, 0, 0]  # padding
    # each target is predicted by the token before it in its own sequence
    assert batch["targets"].tolist() == [8, 9, 11, 12, 3, 4]
    assert batch["pred_rows"].tolist() == [2, 3, 5, 6, 8, 8]
    assert batch["row_index"].tolist() == [0, 0, 2, 2, 1, 3]  # chosen 0..1, rejected 2..3
    assert batch["counts"].tolist() == [2, 1, 2, 1]
    assert "ref_chosen_logps" not in batch  # one row without precomputed values


def test_packing_is_on_by_default_and_off_where_it_cannot_be():
    from ipr_lightning.cli import packs_pairs
    from ipr_lightning.config import load_config

    assert packs_pairs(load_config(None, []))
    assert packs_pairs(load_config(None, ["model.attn_implementation=eager"]))
    assert not packs_pairs(load_config(None, ["loss.shared_prefix=off"]))
    assert not packs_pairs(load_config(None, ["model.attn_implementation=flash_attention_2"]))
