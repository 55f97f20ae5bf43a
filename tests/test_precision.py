"""Precision: `auto` picks bf16 only where it is native; `*-true` keeps trainable parameters
and optimizer state in fp32; preference phases may start with a fresh optimizer and no
dropout; full fine-tuning's frozen copy is refused clearly when it cannot fit."""

from dataclasses import replace

import lightning as L
import pytest
import torch

from ipr_lightning import precision
from ipr_lightning.config import ConfigError, DataConfig, LossConfig, OptimConfig, load_config
from ipr_lightning.data.io import write_pairs
from ipr_lightning.lightning.datamodule import IPRDataModule
from ipr_lightning.lightning.module import IPRModule
from ipr_lightning.models import frozen_copy, load_model
from ipr_lightning.precision import resolve_dtype, resolve_precision

AVX2 = frozenset({"avx", "avx2", "fma"})
AVX512_BF16 = AVX2 | {"avx512f", "avx512bw", "avx512_bf16"}


@pytest.mark.parametrize(
    ("flags", "native"),
    [(AVX2, False), (AVX512_BF16, True), (AVX2 | {"amx_bf16"}, True), (frozenset(), False)],
)
def test_native_bf16_follows_the_cpu_flags(flags, native):
    assert precision.native_bf16("cpu", flags) is native


@pytest.mark.parametrize(
    ("requested", "native", "expected"),
    [
        ("auto", False, "32-true"),  # AVX2: bf16 is emulated, several times slower
        ("auto", True, "bf16-mixed"),
        ("bf16-true", True, "bf16-mixed"),  # autocast over fp32 trainable weights
        ("16-true", True, "16-mixed"),
        ("32-true", True, "32-true"),
        ("bf16-mixed", False, "bf16-mixed"),  # explicit: kept (with a warning)
    ],
)
def test_resolve_precision(requested, native, expected):
    assert resolve_precision(requested, "cpu", native) == expected


def test_auto_weights_dtype_is_fp32_on_cpu_whatever_the_flags():
    assert resolve_dtype("auto", "cpu", True) == resolve_dtype("auto", "cpu", False) == "float32"
    assert resolve_dtype("bfloat16", "cpu", False) == "bfloat16"


def test_auto_is_the_default_and_bad_values_are_one_line():
    cfg = load_config(None, [])
    assert cfg.trainer.precision == "auto" and cfg.model.dtype == "auto"
    with pytest.raises(ConfigError, match="trainer.precision"):
        load_config(None, ["trainer.precision=bf16"])


def _one_pair_file(tmp_path):
    from ipr_lightning.data.records import PreferencePair, Turn

    prompt = [Turn("user", "inst"), Turn("assistant", "OK"), Turn("user", "task")]
    pairs = [
        PreferencePair(
            f"p{i}", prompt, [Turn("assistant", "Action: go")], [Turn("assistant", "Action: look")]
        )
        for i in range(2)
    ]
    write_pairs(tmp_path / "pairs.json", pairs)
    return tmp_path / "pairs.json"


def test_bf16_true_trains_fp32_parameters_with_fp32_optimizer_state(tiny_model_cfg, tmp_path):
    """Lightning's own bf16-true cast the LoRA weights and AdamW moments to bf16: at IPR's
    lr most updates rounded away. Here bf16 is the compute and the frozen weights only."""
    from ipr_lightning.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_model_cfg)
    from ipr_lightning.data.render import ensure_chat_template

    ensure_chat_template(tokenizer)
    data = IPRDataModule(DataConfig(batch_size=2, val_fraction=0.0))
    data.connect(tokenizer)
    data.use_pairs(_one_pair_file(tmp_path))
    cfg = replace(tiny_model_cfg, dtype="bfloat16")
    module = IPRModule(cfg, OptimConfig(lr=3e-6, warmup_ratio=0.0), LossConfig())
    module.phase = "preference"
    trainer = L.Trainer(
        max_steps=1,
        precision=resolve_precision("bf16-true", "cpu", True),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    module.configure_model()
    lora_b = {n: p.detach().clone() for n, p in module.named_parameters() if "lora_B" in n}
    trainer.fit(module, datamodule=data)
    trainable = [p for p in module.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    frozen = [p for n, p in module.named_parameters() if "q_proj.base_layer" in n]
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)
    state = trainer.optimizers[0].state
    moments = [t for s in state.values() for k, t in s.items() if k in ("exp_avg", "exp_avg_sq")]
    assert moments and all(t.dtype == torch.float32 for t in moments)
    moved = [n for n, p in module.named_parameters() if n in lora_b and not p.equal(lora_b[n])]
    assert len(moved) == len(lora_b)  # it trained


def test_begin_phase_can_start_a_fresh_optimizer_and_turn_dropout_off(tiny_model_cfg):
    cfg = replace(tiny_model_cfg, lora=replace(tiny_model_cfg.lora, dropout=0.1))
    module = IPRModule(cfg, OptimConfig(), LossConfig())
    module.configure_model()
    opt = module.configure_optimizers()["optimizer"]
    param = next(p for p in module.parameters() if p.requires_grad)
    opt.state[param]["exp_avg"] = torch.ones_like(param)
    module.trainer = L.Trainer(logger=False, enable_progress_bar=False)
    module.trainer.strategy.optimizers = [opt]
    module.begin_phase("preference", 4, fresh_optimizer=False)
    assert param in opt.state
    dropouts = [m for m in module.model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(m.p == 0.1 for m in dropouts)
    module.begin_phase("preference", 4, fresh_optimizer=True, disable_dropout=True)
    assert not opt.state and all(m.p == 0.0 for m in dropouts)
    # ... and a resumed preference phase has its dropout off again
    ckpt = {"state_dict": {}}
    module.on_save_checkpoint(ckpt)
    fresh = IPRModule(cfg, OptimConfig(), LossConfig())
    fresh.configure_model()
    fresh.on_load_checkpoint(ckpt)
    assert all(m.p == 0.0 for m in fresh.model.modules() if isinstance(m, torch.nn.Dropout))


def test_full_fine_tuning_copy_is_frozen_or_refused_clearly(tiny_model_cfg, monkeypatch):
    model = load_model(replace(tiny_model_cfg, lora=replace(tiny_model_cfg.lora, enabled=False)))
    copy = frozen_copy(model)
    assert not copy.training and not any(p.requires_grad for p in copy.parameters())
    assert all(p.requires_grad for p in model.parameters())  # the policy still trains
    import ipr_lightning.models as models

    monkeypatch.setattr(models, "_free_bytes", lambda device: 1000)
    with pytest.raises(ConfigError, match="frozen copy of the SFT model.*use LoRA"):
        frozen_copy(model)
