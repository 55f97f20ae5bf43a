"""IPRModule: phase schedule, SFT and preference steps, reference log-probs, checkpoints."""

import math
from dataclasses import replace

import lightning as L
import pytest
import torch

from ipr_lightning.config import DataConfig, LossConfig, OptimConfig
from ipr_lightning.data.datasets import PairCollator, PairDataset
from ipr_lightning.data.io import write_pairs
from ipr_lightning.data.records import PreferencePair, Turn
from ipr_lightning.data.render import ensure_chat_template
from ipr_lightning.lightning.datamodule import IPRDataModule
from ipr_lightning.lightning.module import IPRModule, PhaseSchedule
from ipr_lightning.losses import sequence_logps
from ipr_lightning.models import REFERENCE, add_reference_adapter, load_tokenizer


def test_phase_schedule_warmup_cosine_and_restart():
    s = PhaseSchedule(warmup_ratio=0.2, kind="cosine")
    s.begin(global_step=0, total_steps=10)  # warm-up = ceil(0.2 * 10) = 2 steps
    assert [s(k) for k in (0, 1, 2)] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert s(6) == pytest.approx(0.5)  # half-way through the 8 decay steps: (1 + cos(pi/2)) / 2
    assert s(10) == pytest.approx(0.0) and s(50) == pytest.approx(0.0)
    s.begin(global_step=100, total_steps=10)  # a new phase restarts warm-up from its own start
    assert s(100) == pytest.approx(1 / 3)
    flat = PhaseSchedule(warmup_ratio=0.0, kind="constant")
    flat.begin(0, 5)
    assert [flat(k) for k in range(7)] == [1.0] * 7


PROMPT = [
    Turn("user", "You are in a house."),
    Turn("assistant", "OK"),
    Turn("user", "Your task is to: put a mug on shelf 1."),
]


def make_pairs(n: int = 4) -> list[PreferencePair]:
    good = [Turn("assistant", "Thought: go.\nAction: go to shelf 1")]
    bad = [
        Turn("assistant", "Thought: hm.\nAction: look"),
        Turn("user", "Observation: x"),
        Turn("assistant", "Thought: hm.\nAction: inventory"),
    ]
    return [
        PreferencePair(
            f"p{i}",
            PROMPT,
            good,
            bad,
            pair_type="step" if i % 2 else "outcome",
            chosen_reward=1.0,
            rejected_reward=0.0,
            iteration=1,
        )
        for i in range(n)
    ]


@pytest.fixture
def module(tiny_model_cfg):
    m = IPRModule(tiny_model_cfg, OptimConfig(lr=1e-2, warmup_ratio=0.0), LossConfig())
    m.configure_model()
    return m


@pytest.fixture(scope="module")
def tokenizer(tiny_model_cfg):
    return ensure_chat_template(load_tokenizer(tiny_model_cfg))


def pair_batch(tokenizer, pairs):
    ds = PairDataset(pairs, tokenizer, 512)
    return PairCollator(tokenizer.pad_token_id)([ds[i] for i in range(len(ds))])


def test_fresh_lora_policy_equals_its_reference_so_dpo_is_log2(module, tokenizer):
    """LoRA's B matrices start at zero, so policy == reference (adapters disabled): every DPO
    logit is 0 and every loss -log(sigmoid(0)) = log 2; rewards are 0. With w_sft = 0 the
    objective is exactly log 2."""
    module.loss_cfg = LossConfig(w_sft=0.0)
    loss = module._preference_loss(pair_batch(tokenizer, make_pairs()), "train")
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)


def test_precomputed_reference_gives_the_same_loss_as_on_the_fly(module, tokenizer):
    pairs = make_pairs()
    _train_steps(module, pair_batch(tokenizer, pairs), steps=3)  # policy != reference now
    module.eval()  # no LoRA dropout: both evaluations must see the same policy
    batch = pair_batch(tokenizer, pairs)
    with torch.no_grad():
        on_the_fly = module._preference_loss(batch, "train")
        ref = module._reference_logps(batch)
    for p, rc, rr in zip(pairs, *ref, strict=True):
        p.ref_chosen_logp, p.ref_rejected_logp = rc.item(), rr.item()
    precomputed = pair_batch(tokenizer, pairs)
    assert "ref_chosen_logps" in precomputed
    with torch.no_grad():
        assert module._preference_loss(precomputed, "train").item() == pytest.approx(
            on_the_fly.item(), rel=1e-5
        )


def _train_steps(module, batch, steps):
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        module._loss(batch, "train").backward()
        opt.step()


def test_named_reference_adapter_is_the_frozen_copy(module, tokenizer):
    batch = pair_batch(tokenizer, make_pairs())
    _train_steps(module, batch, steps=2)
    module.eval()
    with torch.no_grad():
        at_copy = sequence_logps(
            module(batch["input_ids"], batch["attention_mask"]), batch["labels"]
        )
    add_reference_adapter(module.model)
    module.reference_adapter = REFERENCE
    module.train()
    _train_steps(module, batch, steps=2)  # the policy moves on, the reference must not
    module.eval()
    with torch.no_grad():
        ref_c, ref_r = module._reference_logps(batch)
        now = sequence_logps(module(batch["input_ids"], batch["attention_mask"]), batch["labels"])
    assert torch.allclose(torch.cat([ref_c, ref_r]), at_copy, atol=1e-5)
    assert not torch.allclose(now, at_copy, atol=1e-3)


def test_qlora_preference_training_logs_trl_metrics_and_checkpoints_only_adapters(
    tiny_model_cfg, tokenizer, tmp_path
):
    write_pairs(tmp_path / "pairs.json", make_pairs(8))
    data = IPRDataModule(DataConfig(batch_size=4, val_fraction=0.0))
    data.connect(tokenizer)
    data.use_pairs(tmp_path / "pairs.json")
    qlora = replace(tiny_model_cfg, quantization="nf4", dtype="bfloat16")
    module = IPRModule(qlora, OptimConfig(lr=1e-2), LossConfig())
    module.phase = "preference"
    trainer = L.Trainer(
        max_epochs=3,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        enable_checkpointing=False,
        log_every_n_steps=1,
    )
    trainer.fit(module, datamodule=data)
    logged = trainer.callback_metrics
    for key in (
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
        "train/loss",
        "train/loss_nll",
        "train/loss_outcome_dpo",
        "train/loss_step_dpo",
    ):
        assert key in logged and torch.isfinite(logged[key]), key
    assert logged["rewards/margins"] > 0  # chosen pulled above rejected relative to reference
    assert module.schedule.total == 6  # 2 batches x 3 epochs: sized from this phase's data

    trainer.save_checkpoint(tmp_path / "c.ckpt")
    ckpt = torch.load(tmp_path / "c.ckpt", weights_only=False)
    keys = list(ckpt["state_dict"])
    assert keys and all("lora_" in k for k in keys)  # not one 4-bit base weight
    assert any(type(m).__name__ == "Linear4bit" for m in module.model.modules())
    assert ckpt["ipr_phase"] == {
        "phase": "preference",
        "reference_adapter": None,
        "frozen_adapters": [],
        "frozen_models": [],
        "dropout_off": False,
    }
    assert ckpt["optimizer_states"]  # resumable: optimizer state is kept


def test_head_on_trained_rows_only_equals_full_logits(module, tokenizer, monkeypatch):
    import ipr_lightning.lightning.module as module_py

    module.eval()
    batch = pair_batch(tokenizer, make_pairs())
    _train_steps(module, batch, steps=1)  # non-zero LoRA, so the adapters are exercised too
    module.eval()
    with torch.no_grad():
        full = sequence_logps(module(batch["input_ids"], batch["attention_mask"]), batch["labels"])
        rows_only, counts = module.sequence_logps(batch)
        monkeypatch.setattr(module_py, "causal_lm_parts", lambda model: None)  # the fallback
        fallback, _ = module.sequence_logps(batch)
    assert torch.allclose(rows_only, full, atol=1e-5) and torch.allclose(fallback, full)
    assert counts.tolist() == (batch["labels"][:, 1:] != -100).sum(-1).tolist()


def test_phase_schedule_scales_to_the_phase_lr():
    s = PhaseSchedule(warmup_ratio=0.0, kind="cosine")
    s.begin(10, 4, scale=0.5, kind="constant", warmup_ratio=0.5)
    assert [s(10 + i) for i in range(4)] == [pytest.approx(0.5 / 3), pytest.approx(1 / 3), 0.5, 0.5]


def test_frozen_adapters_come_back_from_a_checkpoint(tiny_model_cfg):
    """A resumed IPR run needs the frozen SFT copy (scorer, reference) with its weights."""
    module = IPRModule(tiny_model_cfg, OptimConfig(), LossConfig())
    module.configure_model()
    add_reference_adapter(module.model, "policy", "sft")
    with torch.no_grad():
        for name, p in module.model.named_parameters():
            if ".sft." in name and "lora_B" in name:
                p.fill_(0.5)
    ckpt = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(ckpt)
    assert ckpt["ipr_phase"]["frozen_adapters"] == ["sft"]

    fresh = IPRModule(tiny_model_cfg, OptimConfig(), LossConfig())
    fresh.configure_model()
    fresh.on_load_checkpoint(ckpt)  # Lightning calls this before loading the state dict
    fresh.load_state_dict(ckpt["state_dict"], strict=False)
    sft = {n: p for n, p in fresh.model.named_parameters() if ".sft." in n and "lora_B" in n}
    assert sft and all(torch.all(p == 0.5) and not p.requires_grad for p in sft.values())


def test_an_iteration_without_pairs_does_not_end_the_fit(tiny_model_cfg, tokenizer, tmp_path):
    """Exploration can produce no pairs. Lightning ends the whole fit on an empty train loader
    ("No training batches"), which silently dropped every later IPR iteration: the phase
    serves one batch that the module skips, so the fit runs all its epochs, training nothing."""
    write_pairs(tmp_path / "pairs.json", [])
    data = IPRDataModule(DataConfig(batch_size=4, val_fraction=0.0))
    data.connect(tokenizer)
    data.use_pairs(tmp_path / "pairs.json")
    assert list(data.train_dataloader()) == [{"no_pairs": True}] and not data.has_pairs
    module = IPRModule(tiny_model_cfg, OptimConfig(lr=1e-2), LossConfig())
    module.configure_model()
    module.phase = "preference"
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    trainer = L.Trainer(
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=data)
    assert trainer.current_epoch == 2  # both epochs ran
    assert all(torch.equal(p, before[n]) for n, p in module.named_parameters())


def test_right_padded_rows_need_no_padding_mask(module, tokenizer):
    from ipr_lightning.lightning.module import causal_mask_or_none

    right = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    left = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    assert causal_mask_or_none(right) is None
    assert causal_mask_or_none(left) is left
    module.eval()
    batch = pair_batch(tokenizer, make_pairs())
    assert (batch["attention_mask"] == 0).any()  # the rows are of different lengths
    with torch.no_grad():
        fast, _ = module.sequence_logps(batch)
        # Each row alone, unpadded: what the shortcut must reproduce.
        alone = []
        for i in range(batch["input_ids"].shape[0]):
            n = int(batch["attention_mask"][i].sum())
            one = {k: batch[k][i : i + 1, :n] for k in ("input_ids", "attention_mask", "labels")}
            alone.append(module.sequence_logps(one)[0])
        # Left-padded, the mask is kept and the rows' values do not move either.
        flipped = {
            k: torch.stack(
                [
                    torch.roll(batch[k][i], int((batch["attention_mask"][i] == 0).sum()))
                    for i in range(batch[k].shape[0])
                ]
            )
            for k in ("input_ids", "attention_mask", "labels")
        }
        left_padded, _ = module.sequence_logps(flipped)
    torch.testing.assert_close(fast, torch.cat(alone), atol=1e-5, rtol=1e-5)
    assert causal_mask_or_none(flipped["attention_mask"]) is not None
    torch.testing.assert_close(left_padded, fast, atol=1e-4, rtol=1e-4)
