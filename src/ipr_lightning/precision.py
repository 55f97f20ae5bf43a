"""Numeric precision that suits the machine: bf16 only where the hardware computes it natively.

CPUs differ: with AVX512-BF16 or AMX a bf16 matmul is native; with AVX2 only (most laptops
and many servers) bf16 autocast is emulated and several times slower than fp32 (a SmolLM2
forward+backward of 512 tokens: 7 s fp32 vs > 45 s bf16 on a 2-core AVX2 EPYC). So:

- `trainer.precision: auto` is `bf16-mixed` on a CUDA device with bf16 and on a CPU with
  AVX512-BF16/AMX, `32-true` elsewhere;
- `model.dtype: auto` (the frozen weights, also used by rollouts) is bf16 on a CUDA device with
  bf16, fp16 on an older CUDA device, fp32 on a CPU (fp32 weights let LoRA merge exactly for
  decoding, and bf16 weights would be slow wherever bf16 is emulated);
- `bf16-true` / `16-true` mean half-precision compute with **fp32 trainable parameters and
  optimizer state** (QLoRA practice): Lightning's own `*-true` would cast the LoRA weights and
  AdamW moments to bf16, where at lr 3e-6 most updates round away. They run as Lightning's
  `*-mixed` (autocast) over weights loaded in `model.dtype`.

    precision, dtype = resolve_precision("auto", "auto"), resolve_dtype("auto", "auto")
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

import torch

log = logging.getLogger("ipr_lightning")

PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true")
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
_TO_LIGHTNING = {"bf16-true": "bf16-mixed", "16-true": "16-mixed"}


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def compute_device(accelerator: str = "auto") -> str:
    """`cuda` when the run will compute on a CUDA device, else `cpu`."""
    wants_gpu = accelerator in ("auto", "gpu", "cuda")
    return "cuda" if wants_gpu and torch.cuda.is_available() else "cpu"


def native_bf16(device: str, flags: frozenset[str] | None = None) -> bool:
    """Whether `device` computes bf16 natively (not emulated through fp32)."""
    if device == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if flags is None:
        flags = cpu_flags()
        # torch's own kernels capped below AVX512 (ATEN_CPU_CAPABILITY=avx2): not native either
        if torch.backends.cpu.get_cpu_capability() not in ("AVX512", "AMX"):
            return False
    return any(f in flags for f in NATIVE_BF16_CPU_FLAGS)


def resolve_precision(requested: str, accelerator: str = "auto", native: bool | None = None) -> str:
    """The Lightning precision string for `trainer.precision` on this machine (see above)."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    device = compute_device(accelerator)
    native = native_bf16(device) if native is None else native
    if requested == "auto":
        return "bf16-mixed" if native else "32-true"
    if requested.startswith("bf16") and not native:
        log.warning(
            "precision %s on a %s without native bf16: bf16 is emulated there and several "
            "times slower than fp32 (precision=auto picks 32-true on this machine)",
            requested,
            device,
        )
    return _TO_LIGHTNING.get(requested, requested)


def resolve_dtype(requested: str, accelerator: str = "auto", native: bool | None = None) -> str:
    """The weights dtype name for `model.dtype` on this machine (see above)."""
    if requested != "auto":
        return requested
    device = compute_device(accelerator)
    if device == "cpu":
        return "float32"
    native = native_bf16(device) if native is None else native
    return "bfloat16" if native else "float16"


def describe_machine(accelerator: str = "auto") -> str:
    """One line for the log: device, CPU capability and whether bf16 is native."""
    device = compute_device(accelerator)
    if device == "cuda":
        return f"cuda ({torch.cuda.get_device_name()}), native bf16: {native_bf16('cuda')}"
    capability = torch.backends.cpu.get_cpu_capability()
    return f"cpu ({capability}), native bf16: {native_bf16('cpu')}"
