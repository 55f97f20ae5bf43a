"""One GPU for the trainer and vLLM: the memory plan's arithmetic (parameter and adapter
counts exact against real models, what each phase holds), vLLM's share of the card when it
starts beside the trainer, and sleeping through training (against a stand-in vLLM module:
sleep mode exists on GPUs only)."""

from __future__ import annotations

import sys
import types

import peft
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ipr_lightning.cli import fit_main
from ipr_lightning.config import ConfigError, load_config
from ipr_lightning.memory_plan import GIB, memory_plan, shape_of
from ipr_lightning.rollout.vllm_policy import VLLMEngine, sleep_enabled, vllm_utilization

LLAMA2_7B = LlamaConfig()  # transformers' defaults are Llama-2-7B's shape


@pytest.mark.parametrize("tied", [False, True])
def test_parameter_and_lora_counts_are_the_models(tied):
    config = LlamaConfig(
        vocab_size=100,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention
        tie_word_embeddings=tied,
    )
    model = LlamaForCausalLM(config)
    shape = shape_of(config)
    assert shape.params == model.num_parameters()
    lora = peft.get_peft_model(model, peft.LoraConfig(r=8, target_modules=["q_proj", "down_proj"]))
    trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert shape.lora_params(8, ["q_proj", "down_proj"]) == trainable


def test_llama2_7b_counts_are_the_published_ones():
    shape = shape_of(LLAMA2_7B)
    assert shape.params == 6_738_415_616
    assert shape.lora_params(64, ["all-linear"]) == 159_907_840  # QLoRA's r=64, every linear


def plan_7b(*overrides: str):
    cfg = load_config("configs/alfworld.yaml", list(overrides))
    return memory_plan(shape_of(LLAMA2_7B), cfg)


def item(plan, owner: str, starts: str):
    (found,) = [i for i in plan.items if i.owner == owner and i.what.startswith(starts)]
    return found


def test_qlora_weights_are_a_quarter_of_bf16():
    nf4 = item(plan_7b(), "trainer", "base weights").gib
    bf16 = item(plan_7b("model.quantization=none", "model.lora.enabled=true"), "trainer", "base")
    assert 3.5 < nf4 < 3.7  # 4.13 bits per linear weight, embeddings and head in bf16
    assert bf16.gib == pytest.approx(6_738_415_616 * 2 / GIB)


def test_sleeping_vllm_leaves_training_its_weights_and_cache():
    awake = plan_7b("rollout.backend=vllm", "rollout.vllm_sleep=off")
    asleep = plan_7b("rollout.backend=vllm", "rollout.vllm_sleep=on")
    held = sum(i.gib for i in asleep.items if i.owner == "vllm" and "training" not in i.phases)
    assert held > 14  # bf16 weights, LoRA slots, 2 GiB of keys/values
    assert awake.total("training") - asleep.total("training") == pytest.approx(held)
    assert awake.total("rollouts") == pytest.approx(asleep.total("rollouts"))
    hf = plan_7b()
    assert hf.owned("vllm", "rollouts") == 0
    assert hf.total("training") == pytest.approx(
        asleep.total("training") - asleep.owned("vllm", "training")
    )


def test_what_shrinks_activations_and_vllm_weights():
    acts = lambda p: item(p, "trainer", "activations").gib  # noqa: E731
    assert acts(plan_7b("data.batch_size=1")) == pytest.approx(acts(plan_7b()) / 4)
    assert acts(plan_7b("model.gradient_checkpointing=false")) > 3 * acts(plan_7b())
    bf16 = item(plan_7b("rollout.backend=vllm"), "vllm", "base weights").gib
    fp8 = plan_7b("rollout.backend=vllm", "rollout.vllm_quantization=fp8_per_channel")
    assert item(fp8, "vllm", "base weights").gib < 0.55 * bf16
    full = plan_7b("model.quantization=none", "model.lora.enabled=false")
    assert item(full, "trainer", "1 frozen model copy").gib == pytest.approx(
        item(full, "trainer", "base weights").gib
    )


def test_a_cache_shorter_than_one_sequence_is_flagged():
    short = plan_7b("rollout.backend=vllm", "rollout.vllm_kv_cache_gb=1")  # 0.5 MiB a token
    assert any("holds 2048 tokens, fewer than one sequence of 4096" in n for n in short.notes)
    assert not any("fewer than" in n for n in plan_7b("rollout.backend=vllm").notes)


def test_memory_plan_cli_prints_both_phases(tmp_path, capsys):
    LLAMA2_7B.save_pretrained(tmp_path / "llama")  # a config alone: no weights needed
    argv = ["--config", "configs/alfworld.yaml", f"model.name_or_path={tmp_path / 'llama'}"]
    assert (
        fit_main([*argv, "rollout.backend=vllm", "data.batch_size=1", "--memory-plan", "24"]) == 0
    )
    out = capsys.readouterr().out
    assert "| **rollouts** | total, 24 GiB card:" in out
    assert "| **training** | total, 24 GiB card: fits" in out
    assert "vLLM sleeps during training" in out
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["rollout.vllm_gpu_memory_utilization=1.5"], "utilization is a share of the GPU"),
        (["rollout.vllm_sleep=sometimes"], "rollout.vllm_sleep must be auto, on or off"),
    ],
)
def test_bad_memory_settings_are_one_line(overrides, needle):
    with pytest.raises(ConfigError, match=needle) as info:
        load_config(None, overrides)
    assert "\n" not in str(info.value)


def test_bare_yaml_on_off_are_read_as_sleep_settings(tmp_path):
    (tmp_path / "c.yaml").write_text("rollout: {vllm_sleep: off}\n")
    assert load_config(tmp_path / "c.yaml", []).rollout.vllm_sleep == "off"
    assert load_config(None, ["rollout.vllm_sleep=on"]).rollout.vllm_sleep == "on"


def test_vllm_share_of_the_gpu_is_what_is_free():
    total, free = 80 * GIB, 30 * GIB
    assert vllm_utilization(0, free, total) == 0.36  # (30 - 0.5) / 80, rounded down
    assert vllm_utilization(0.3, free, total) == 0.3
    with pytest.raises(ConfigError, match="vllm_gpu_memory_utilization=0.5 asks for 40.0 GiB"):
        vllm_utilization(0.5, free, total)
    with pytest.raises(ConfigError, match="vLLM cannot start: 0.2 GiB"):
        vllm_utilization(0, int(0.2 * GIB), total)


def test_sleep_setting_against_the_platform():
    assert sleep_enabled("auto", True) and not sleep_enabled("auto", False)
    assert not sleep_enabled("off", True)
    with pytest.raises(ConfigError, match="no sleep mode"):
        sleep_enabled("on", False)


class FakeLLM:
    """vllm.LLM's sleep/wake surface, recording what it was asked."""

    def __init__(self, **kwargs):
        self.kwargs, self.calls = kwargs, []

    def sleep(self, level=1):
        self.calls.append(f"sleep{level}")

    def wake_up(self, tags=None):
        self.calls.append("wake")


@pytest.fixture
def fake_vllm(monkeypatch):
    vllm = types.ModuleType("vllm")
    vllm.__version__, vllm.LLM = "fake", FakeLLM
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = types.SimpleNamespace(
        is_cpu=lambda: False, is_sleep_mode_available=lambda: True
    )
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = lambda name, n, path: (name, n, path)
    for name, module in [
        ("vllm", vllm),
        ("vllm.platforms", platforms),
        ("vllm.lora", types.ModuleType("vllm.lora")),
        ("vllm.lora.request", request),
    ]:
        monkeypatch.setitem(sys.modules, name, module)


def test_engine_sleeps_through_training_and_wakes_for_rollouts(fake_vllm, tmp_path):
    cfg = load_config(None, ["rollout.backend=vllm", "rollout.vllm_quantization=fp8_per_channel"])
    engine = VLLMEngine("base", cfg.rollout, cfg.model)
    engine.sleep()  # not started: nothing to free
    engine.policy(None, tmp_path)
    llm = engine.llm
    assert llm.kwargs["enable_sleep_mode"] and llm.kwargs["quantization"] == "fp8_per_channel"
    engine.sleep()
    engine.sleep()
    assert llm.calls == ["sleep1"]
    engine.policy(None, tmp_path)
    engine.policy(None, tmp_path)
    assert llm.calls == ["sleep1", "wake"]
    engine.close()
    off = VLLMEngine("base", load_config(None, ["rollout.vllm_sleep=off"]).rollout, cfg.model)
    assert not off.llm.kwargs["enable_sleep_mode"]
    off.sleep()
    assert off.llm.calls == []


def test_engine_on_a_gpu_asks_for_what_is_free_beside_the_trainer(fake_vllm, monkeypatch):
    released = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: released.append(1))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (20 * GIB, 24 * GIB))
    base = ["rollout.backend=vllm", "model.dtype=float32"]
    cfg = load_config(None, base)
    assert VLLMEngine("base", cfg.rollout, cfg.model).llm.kwargs["gpu_memory_utilization"] == 0.81
    assert released  # the trainer's cached blocks went back to the card before measuring
    cfg = load_config(None, [*base, "rollout.vllm_gpu_memory_utilization=0.9"])
    with pytest.raises(ConfigError, match="but 20.0 GiB are free beside the trainer"):
        _ = VLLMEngine("base", cfg.rollout, cfg.model).llm
