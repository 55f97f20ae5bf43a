"""The engine that serves a run's saved LoRA adapters, for `rollout.backend` `vllm` (an
engine in this process) or `openai` (a fleet of servers); `hf` needs none (the training
model generates itself). Both give a `Policy` per saved adapter folder:

    server = adapter_server(cfg)                   # None for hf
    policy = server.policy(tokenizer, folder)      # after each save of the folder
    server.sleep(); server.close()                 # around training; at the end
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from transformers import PreTrainedTokenizerBase

from ipr_lightning.config import RunConfig
from ipr_lightning.models import resolve_model_path
from ipr_lightning.rollout.policy import Policy


class AdapterServer(Protocol):
    def policy(
        self, tokenizer: PreTrainedTokenizerBase, adapter: str | Path | None = None
    ) -> Policy: ...

    def sleep(self) -> None: ...

    def close(self) -> None: ...


def adapter_server(cfg: RunConfig) -> AdapterServer | None:
    """The configured engine (a missing vLLM fails here, before any training)."""
    if cfg.rollout.backend == "vllm":
        from ipr_lightning.rollout.vllm_policy import VLLMEngine, import_vllm

        import_vllm()
        return VLLMEngine(resolve_model_path(cfg.model), cfg.rollout, cfg.model, cfg.seed)
    if cfg.rollout.backend == "openai":
        from ipr_lightning.rollout.openai_fleet import OpenAIFleet

        return OpenAIFleet(cfg.rollout, os.environ.get("OPENAI_API_KEY", "EMPTY"))
    return None
