"""One GPU for the trainer and vLLM (`rollout.backend: vllm`, in the trainer's process): how
much memory each holds in each phase, estimated from the model's shape and the run's config.

    plan = memory_plan(shape_of(model_config), cfg)    # cfg: a RunConfig
    print(format_plan(plan, gpu_gib=24.0))              # ipr-fit --config C --memory-plan 24

Weights, adapters and optimizer states are exact arithmetic over a Llama-style decoder's
shape (biases are left out). Activations follow a per-token rule of thumb; the CUDA context
and vLLM's own working memory (CUDA graphs, a prefill chunk's activations, the sampler) are
fixed allowances. So the totals are estimates to size a run with, not measurements.

The two phases of an iteration:
- rollouts: the trainer's resident state (weights, adapters, optimizer) and vLLM awake
  (its copy of the base weights, LoRA slots, key/value cache);
- training: the trainer at its peak, and vLLM asleep (`rollout.vllm_sleep`: weights moved
  to CPU RAM, key/value cache released; its working memory stays) or awake.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ipr_lightning.config import RunConfig
from ipr_lightning.precision import resolve_dtype, resolve_precision
from ipr_lightning.rollout.vllm_policy import max_lora_rank

GIB = 2**30
CUDA_CONTEXT_GIB = 0.75
"""CUDA context, kernels, cuBLAS workspace and allocator slack: an allowance."""
VLLM_WORKING_GIB = 1.0
"""vLLM's working memory besides a prefill chunk's activations (CUDA graphs, sampler,
scheduler buffers): an allowance, kept while it sleeps."""
VLLM_CHUNK_TOKENS = 8192
"""Tokens of one prefill chunk whose activations vLLM reserves."""
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
"""Bytes per 4-bit NF4 weight with double quantisation (8-bit absmax per block of 64, fp32
scale per 256 blocks)."""
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
VLLM_LORA_SLOTS = 2
"""Adapters vLLM holds on the GPU at once (`max_loras`: the explorer and the scorer)."""


@dataclass(frozen=True)
class Shape:
    """A Llama-style decoder's shape: what the plan's arithmetic needs."""

    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool

    def linear(self, name: str) -> tuple[int, int]:
        """(in, out) features of one layer's linear module `name`."""
        h, i, q, kv = self.hidden, self.intermediate, self.heads * self.head_dim, self.kv_heads
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv * self.head_dim),
            "v_proj": (h, kv * self.head_dim),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }[name]

    @property
    def linear_params(self) -> int:
        """Weights of the decoder layers' linear modules (what NF4 quantises)."""
        return self.layers * sum(a * b for a, b in map(self.linear, LINEARS))

    @property
    def other_params(self) -> int:
        """Embeddings, the output head (unless tied) and the norms."""
        head = 0 if self.tied else self.vocab * self.hidden
        return self.vocab * self.hidden + head + (2 * self.layers + 1) * self.hidden

    @property
    def params(self) -> int:
        return self.linear_params + self.other_params

    def lora_params(self, r: int, targets: list[str]) -> int:
        names = LINEARS if "all-linear" in targets else [n for n in LINEARS if n in targets]
        return self.layers * sum(r * sum(self.linear(n)) for n in names)


def shape_of(config: Any) -> Shape:
    """The shape of a transformers model config (its text config for multimodal ones)."""
    c = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = c.num_attention_heads
    return Shape(
        vocab=c.vocab_size,
        hidden=c.hidden_size,
        intermediate=c.intermediate_size,
        layers=c.num_hidden_layers,
        heads=heads,
        kv_heads=getattr(c, "num_key_value_heads", None) or heads,
        head_dim=getattr(c, "head_dim", None) or c.hidden_size // heads,
        tied=bool(getattr(c, "tie_word_embeddings", False)),
    )


@dataclass(frozen=True)
class Item:
    owner: str  # "trainer" | "vllm" | "cuda"
    what: str
    gib: float
    phases: tuple[str, ...]  # the phases it is held in: "rollouts", "training"


@dataclass(frozen=True)
class MemoryPlan:
    items: tuple[Item, ...]
    notes: tuple[str, ...]

    def total(self, phase: str) -> float:
        return sum(i.gib for i in self.items if phase in i.phases)

    def owned(self, owner: str, phase: str) -> float:
        return sum(i.gib for i in self.items if i.owner == owner and phase in i.phases)


def _vllm_weight_bytes(quantization: str, dtype_bytes: int) -> float:
    """Bytes per linear weight in vLLM: 1 for its 8-bit online methods, 0.5 for 4-bit
    floating point, else the dtype's."""
    q = quantization.lower()
    if "fp4" in q:
        return 0.5
    if "fp8" in q or "int8" in q:
        return 1
    return dtype_bytes


def memory_plan(shape: Shape, cfg: RunConfig) -> MemoryPlan:
    m, d, r = cfg.model, cfg.data, cfg.rollout
    dtype = resolve_dtype(m.dtype, "cuda", native=True)
    if m.quantization == "nf4" and dtype == "float32":
        dtype = "bfloat16"  # the NF4 compute dtype (models.build_bnb_config)
    wbytes = DTYPE_BYTES[dtype]
    act = 4 if resolve_precision(cfg.trainer.precision, "cuda", native=True) == "32-true" else 2
    both, rollouts, training = ("rollouts", "training"), ("rollouts",), ("training",)
    notes = []
    items = [
        Item("cuda", "CUDA context, kernels, allocator slack (allowance)", CUDA_CONTEXT_GIB, both)
    ]

    # the trainer: weights, what trains, frozen references
    linear_bytes = NF4_BYTES if m.quantization == "nf4" else wbytes
    weights = shape.linear_params * linear_bytes + shape.other_params * wbytes
    quant = ", NF4" if m.quantization == "nf4" else ""
    items.append(Item("trainer", f"base weights ({dtype}{quant})", weights / GIB, both))
    iterations = cfg.ipr.iterations > 0
    copies = (1 + (cfg.ipr.reference == "previous")) if iterations else 0  # SFT (, previous)
    if m.lora.enabled:
        lora = shape.lora_params(m.lora.r, m.lora.target_modules)
        what = f"LoRA r={m.lora.r}: fp32 weights, gradients, AdamW states"
        items.append(Item("trainer", what, lora * 16 / GIB, both))
        frozen = ("frozen adapter", lora * 4)
        if unknown := sorted(set(m.lora.target_modules) - set(LINEARS) - {"all-linear"}):
            notes.append(f"LoRA on {unknown} is not counted (not a Llama-style module name)")
    else:
        states = shape.params * wbytes * 3  # gradients and two AdamW states, like the weights
        items.append(Item("trainer", "gradients and AdamW states", states / GIB, both))
        frozen = ("frozen model", weights)
    if copies:
        what = f"{copies} {frozen[0]} cop{'ies' if copies > 1 else 'y'} (references)"
        items.append(Item("trainer", what, copies * frozen[1] / GIB, both))

    # the trainer's activations at its peak: a preference batch, both sides of each pair
    tokens = d.batch_size * d.max_length * (2 if iterations else 1)
    adapted = (6 * shape.hidden + shape.intermediate) if m.lora.enabled else 0
    per_layer = tokens * act * (8 * shape.hidden + 5 * shape.intermediate + adapted)
    if m.gradient_checkpointing:
        layers = shape.layers * tokens * shape.hidden * act + per_layer
        ckpt = "gradient checkpointing"
    else:
        layers = shape.layers * per_layer
        ckpt = "no gradient checkpointing"
    logits = tokens * shape.vocab * (act + 8)  # logits, fp32 log-softmax and its gradient
    what = f"activations of {tokens} tokens ({ckpt}) and their logits (estimate)"
    items.append(Item("trainer", what, (layers + logits) / GIB, training))

    if r.backend == "vllm":
        vbytes = _vllm_weight_bytes(r.vllm_quantization, wbytes)
        vweights = shape.linear_params * vbytes + shape.other_params * wbytes
        label = f"base weights ({r.vllm_quantization or dtype})"
        sleeps = r.vllm_sleep != "off"
        held = rollouts if sleeps else both
        items.append(Item("vllm", label, vweights / GIB, held))
        rank = max_lora_rank(m.lora.r)
        slots = VLLM_LORA_SLOTS * rank * sum(map(sum, map(shape.linear, LINEARS)))
        what = f"{VLLM_LORA_SLOTS} LoRA slots of rank {rank}"
        items.append(Item("vllm", what, slots * shape.layers * wbytes / GIB, held))
        kv_tokens = int(r.vllm_kv_cache_gb * GIB / kv_bytes_per_token(shape, wbytes))
        what = f"key/value cache (rollout.vllm_kv_cache_gb: {kv_tokens} tokens)"
        items.append(Item("vllm", what, r.vllm_kv_cache_gb, held))
        longest = r.vllm_max_model_len or d.max_length
        if kv_tokens < longest:
            notes.append(
                f"vLLM's key/value cache holds {kv_tokens} tokens, fewer than one sequence of "
                f"{longest} (rollout.vllm_max_model_len, else data.max_length): it will not start"
            )
        chunk = VLLM_CHUNK_TOKENS * (4 * shape.hidden + 3 * shape.intermediate) * wbytes
        what = "working memory: CUDA graphs, sampler, a prefill chunk (allowance)"
        items.append(Item("vllm", what, VLLM_WORKING_GIB + chunk / GIB, both))
        if m.quantization == "nf4":
            notes.append(
                "vLLM serves the base unquantised (or rollout.vllm_quantization): it has no "
                "NF4 loader; the adapter trained on the NF4 base acts on it"
            )
        if sleeps:
            notes.append("vLLM sleeps during training (rollout.vllm_sleep): weights to CPU RAM")
    return MemoryPlan(tuple(items), tuple(notes))


def kv_bytes_per_token(shape: Shape, dtype_bytes: int) -> int:
    return 2 * shape.layers * shape.kv_heads * shape.head_dim * dtype_bytes


def format_plan(plan: MemoryPlan, gpu_gib: float) -> str:
    """The plan as a table, each phase's total against a card of `gpu_gib`."""
    rows = ["| held by | what | GiB | rollouts | training |", "|---|---|---|---|---|"]
    for i in plan.items:
        marks = ["x" if p in i.phases else "" for p in ("rollouts", "training")]
        rows.append(f"| {i.owner} | {i.what} | {i.gib:.2f} | {marks[0]} | {marks[1]} |")
    for phase in ("rollouts", "training"):
        total = plan.total(phase)
        verdict = "fits" if total <= gpu_gib else f"does NOT fit: {total - gpu_gib:.1f} GiB over"
        rows.append(f"| **{phase}** | total, {gpu_gib:g} GiB card: {verdict} | {total:.2f} | | |")
    return "\n".join(rows + [f"- {n}" for n in plan.notes])
