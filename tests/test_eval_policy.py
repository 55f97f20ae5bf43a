"""`ipr-eval`'s policy: the LoRA adapter is merged into the weights only when that is exact
(fp32 base weights, `models.can_merge_exactly`); bf16 weights evaluate it unmerged, since
merging would round the LoRA update into bf16 and evaluate a different policy."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from peft import PeftModel

from ipr_lightning.config import RunConfig
from ipr_lightning.eval_cli import build_policy
from ipr_lightning.models import load_adapter_weights, load_model, save_adapter


@pytest.fixture(scope="module")
def trained_adapter(tiny_model_cfg, tmp_path_factory):
    """An adapter with nonzero LoRA B (a fresh one is the identity), saved as ipr-fit does."""
    model = load_model(tiny_model_cfg)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.05)
    folder = tmp_path_factory.mktemp("adapter")
    save_adapter(model, folder)
    return folder


@pytest.mark.parametrize("dtype, merged", [("bfloat16", False), ("float32", True)])
def test_lora_is_merged_only_into_fp32_weights(tiny_model_cfg, trained_adapter, dtype, merged):
    cfg = RunConfig(model=dataclasses.replace(tiny_model_cfg, dtype=dtype))
    policy = build_policy(cfg, trained_adapter)
    assert isinstance(policy.model, PeftModel) is not merged
    weight = policy.model.get_input_embeddings().weight
    assert weight.dtype == getattr(torch, dtype)
    if merged:  # exact: the merged model computes what the adapter does
        reference = load_model(tiny_model_cfg)
        load_adapter_weights(reference, trained_adapter)
        ids = torch.tensor([[1, 5, 9, 17, 33, 2]])
        with torch.no_grad():
            want = reference.eval()(input_ids=ids).logits
            got = policy.model.eval()(input_ids=ids.to(weight.device)).logits.cpu()
        assert torch.allclose(got, want, atol=1e-5)
