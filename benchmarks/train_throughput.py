"""Preference-training throughput and memory: ours (each switch on and off) against TRL's
`DPOTrainer`, on the same IPR-shaped step pairs, model and LoRA, side by side in one run.

The pairs: `--pairs` ALFWorld expert prefixes (generated games, the paper's prompt) of at
most `--prefix-tokens` tokens, each with the expert's next action as chosen and another
expert action as rejected (one action per side, as IPR's step pairs in `action` mode).
Each variant runs in its own process (peak RSS is per process): `--warmup` untimed steps,
then `--steps` timed optimizer steps of `--per-step` pairs; reference = the base model
(adapters off), on the fly unless the variant precomputes it.

    python benchmarks/train_throughput.py                      # SmolLM2-135M, CPU, fp32
    python benchmarks/train_throughput.py --no-trl --steps 2   # ours only
    pip install '.[trl-compare]'                               # for the TRL rows

Printed per variant: seconds per step; pair tokens per second (the tokens of prompt + chosen
and prompt + rejected, as two plain rows hold them: the same work for every variant, so the
ratio is the speed-up) and trained (completion) tokens per second, both from the mean pair;
peak memory (RSS on CPU, `torch.cuda.max_memory_allocated` on GPU); then each of ours against
TRL's matching row. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    # name: (engine, shared prefix, precomputed reference, gradient checkpointing)
    "ours": ("ours", True, False, False),
    "ours, no shared prefix": ("ours", False, False, False),
    "TRL": ("trl", None, False, False),
    "ours, reference precomputed": ("ours", True, True, False),
    "TRL, reference precomputed": ("trl", None, True, False),
    "ours, gradient checkpointing": ("ours", True, False, True),
    "ours, no shared prefix, gradient checkpointing": ("ours", False, False, True),
    "TRL, gradient checkpointing": ("trl", None, False, True),
}
COMPARE = {  # ours -> the TRL row it is held against
    "ours": "TRL",
    "ours, no shared prefix": "TRL",
    "ours, reference precomputed": "TRL, reference precomputed",
    "ours, gradient checkpointing": "TRL, gradient checkpointing",
    "ours, no shared prefix, gradient checkpointing": "TRL, gradient checkpointing",
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="embedded:smollm2-135m-instruct")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--pairs", type=int, default=16)
    p.add_argument("--per-step", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--prefix-tokens", type=int, default=900)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--no-trl", action="store_true", help="only our variants")
    p.add_argument("--only", action="append", help="run only these variants (repeatable)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--pairs-file", help=argparse.SUPPRESS)
    return p.parse_args()


def peak_memory_gib() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def make_pairs(args: argparse.Namespace, path: Path) -> None:
    """IPR-shaped step pairs from ALFWorld expert prefixes, written to `path`."""
    from ipr_lightning.config import ModelConfig
    from ipr_lightning.data.io import write_pairs
    from ipr_lightning.data.records import PreferencePair
    from ipr_lightning.data.render import ensure_chat_template
    from ipr_lightning.models import load_tokenizer

    sys.path.insert(0, str(Path(__file__).parent))
    from rollout_throughput import expert_prefixes

    tok = ensure_chat_template(load_tokenizer(ModelConfig(name_or_path=args.model)))
    prefixes = expert_prefixes(tok, args.pairs + 1, args.prefix_tokens)
    pairs = []
    for i in range(args.pairs):
        history, _ = prefixes[i]
        other_history, _ = prefixes[i + 1]
        # chosen: the expert's action right before the prefix's last observation, which
        # becomes the completion; rejected: another trajectory's action at the same place
        prompt, chosen = history[:-2], history[-2]
        rejected = other_history[-2]
        if rejected.content == chosen.content:
            rejected = other_history[-4] if len(other_history) > 5 else prefixes[0][0][-2]
        pairs.append(
            PreferencePair(
                f"bench-{i}", prompt, [chosen], [rejected], pair_type="step",
                chosen_reward=1.0, rejected_reward=0.0, prompt_start=3,
            )
        )  # fmt: skip
    write_pairs(path, pairs)


def run_ours(args: argparse.Namespace, shared: bool, precompute: bool, checkpointing: bool):
    import torch
    from torch.utils.data import DataLoader

    from ipr_lightning.config import LoraConfig, LossConfig, ModelConfig, OptimConfig
    from ipr_lightning.data.datasets import PairCollator, PairDataset, SharedPrefixCollator
    from ipr_lightning.data.io import read_pairs
    from ipr_lightning.data.render import ensure_chat_template
    from ipr_lightning.lightning.module import IPRModule
    from ipr_lightning.lightning.reference import reference_logps
    from ipr_lightning.models import load_tokenizer

    model_cfg = ModelConfig(
        name_or_path=args.model,
        dtype=args.dtype,
        lora=LoraConfig(r=args.lora_r, alpha=2 * args.lora_r, dropout=0.0),
        gradient_checkpointing=checkpointing,
    )
    tok = ensure_chat_template(load_tokenizer(model_cfg))
    data = PairDataset(read_pairs(args.pairs_file), tok, 4096)
    module = IPRModule(model_cfg, OptimConfig(lr=1e-5), LossConfig(w_sft=0.0))
    module.configure_model()
    module.phase = "preference"
    if precompute:
        collate = SharedPrefixCollator if shared else PairCollator
        values = reference_logps(module, data, args.per_step, collate(tok.pad_token_id))
        for row, (c, r) in zip(data.rows, values, strict=True):
            row.ref_chosen_logp, row.ref_rejected_logp = c, r
    collate = (SharedPrefixCollator if shared else PairCollator)(tok.pad_token_id)
    loader = DataLoader(data, batch_size=args.per_step, collate_fn=collate)
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-5)
    module.log = module.log_dict = lambda *a, **k: None  # no trainer here
    batches = list(loader)
    seconds = 0.0
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        opt.zero_grad()
        module._preference_loss(batches[step % len(batches)], "train").backward()
        opt.step()
        if step >= args.warmup:
            seconds += time.perf_counter() - start
    return seconds / args.steps


def run_trl(args: argparse.Namespace, precompute: bool, checkpointing: bool):
    import torch
    from datasets import Dataset
    from peft import LoraConfig as PeftLora
    from trl import DPOConfig, DPOTrainer

    from ipr_lightning.config import ModelConfig
    from ipr_lightning.data.io import read_pairs
    from ipr_lightning.data.render import ensure_chat_template, render_text
    from ipr_lightning.models import load_model, load_tokenizer

    model_cfg = ModelConfig(name_or_path=args.model, dtype=args.dtype)
    model_cfg.lora.enabled = False
    tok = ensure_chat_template(load_tokenizer(model_cfg))
    model = load_model(model_cfg)
    model.requires_grad_(False)
    rows = []
    for p in read_pairs(args.pairs_file):
        prompt = render_text(tok, p.prompt, add_generation_prompt=True)
        full_c = render_text(tok, p.prompt + p.chosen)
        full_r = render_text(tok, p.prompt + p.rejected)
        rows.append(
            {"prompt": prompt, "chosen": full_c[len(prompt) :], "rejected": full_r[len(prompt) :]}
        )
    config = DPOConfig(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=args.per_step,
        max_steps=args.warmup + args.steps,
        learning_rate=1e-5,
        beta=0.1,
        gradient_checkpointing=checkpointing,
        precompute_ref_log_probs=precompute,
        max_length=4096,
        logging_steps=1000,
        save_strategy="no",
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        bf16=False,
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )
    lora = PeftLora(
        r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0, target_modules="all-linear"
    )
    trainer = DPOTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        peft_config=lora,
    )
    times: list[float] = []

    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):  # noqa: ANN002, ANN003, ANN202
            self.start = time.perf_counter()

        def on_step_end(self, *a, **k):  # noqa: ANN002, ANN003, ANN202
            times.append(time.perf_counter() - self.start)

    trainer.add_callback(Clock())
    trainer.train()
    timed = times[args.warmup :]
    return sum(timed) / len(timed)


def worker(args: argparse.Namespace) -> None:
    engine, shared, precompute, checkpointing = VARIANTS[args.worker]
    if engine == "ours":
        per_step = run_ours(args, shared, precompute, checkpointing)
    else:
        per_step = run_trl(args, precompute, checkpointing)
    print(json.dumps({"s_per_step": per_step, "peak_gib": peak_memory_gib()}))


def mean_pair_tokens(args: argparse.Namespace, path: Path) -> tuple[float, float]:
    """(prompt + chosen + prompt + rejected tokens, trained tokens) of the mean pair."""
    from ipr_lightning.config import ModelConfig
    from ipr_lightning.data.datasets import PairDataset
    from ipr_lightning.data.io import read_pairs
    from ipr_lightning.data.render import ensure_chat_template
    from ipr_lightning.models import load_tokenizer

    tok = ensure_chat_template(load_tokenizer(ModelConfig(name_or_path=args.model)))
    rows = PairDataset(read_pairs(path), tok, 4096).rows
    pair = sum(len(r.chosen.input_ids) + len(r.rejected.input_ids) for r in rows) / len(rows)
    trained = sum(r.chosen.num_trained + r.rejected.num_trained for r in rows) / len(rows)
    return pair, trained


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    import torch

    names = args.only or [n for n in VARIANTS if not (args.no_trl and VARIANTS[n][0] == "trl")]
    with tempfile.TemporaryDirectory() as tmp:
        pairs = Path(tmp) / "pairs.json"
        make_pairs(args, pairs)
        pair_tokens, trained_tokens = mean_pair_tokens(args, pairs)
        results = {}
        for name in names:
            cmd = [sys.executable, __file__, "--worker", name, "--pairs-file", str(pairs)]
            for key in ("model", "dtype", "per_step", "steps", "warmup", "lora_r"):
                cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
            done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
            if done.returncode != 0:
                print(f"{name}: failed\n{done.stderr[-3000:]}", file=sys.stderr)
                continue
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"  measured {name}: {results[name]}", file=sys.stderr)
    cap = torch.backends.cpu.get_cpu_capability()
    print(
        f"\n{args.pairs} step pairs of <= {args.prefix_tokens} prompt tokens, {args.per_step} "
        f"per step, {args.steps} timed steps; {args.model} {args.dtype}, LoRA r{args.lora_r} "
        f"all-linear; {'CUDA' if torch.cuda.is_available() else f'CPU {cap}'}, "
        f"{torch.get_num_threads()} threads\n"
    )
    print(f"mean pair: {pair_tokens:.0f} tokens as two plain rows, {trained_tokens:.0f} trained\n")
    print("| variant | s/step | pair tokens/s | trained tokens/s | peak memory (GiB) |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        r["tokens_per_s"] = args.per_step * pair_tokens / r["s_per_step"]
        trained_s = args.per_step * trained_tokens / r["s_per_step"]
        print(
            f"| {name} | {r['s_per_step']:.1f} | {r['tokens_per_s']:.1f} | {trained_s:.1f} | "
            f"{r['peak_gib']:.2f} |"
        )
    print("\n| ours vs TRL | tokens/s ratio | memory ratio |\n|---|---|---|")
    for ours, trl in COMPARE.items():
        if ours in results and trl in results:
            speed = results[ours]["tokens_per_s"] / results[trl]["tokens_per_s"]
            memory = results[ours]["peak_gib"] / results[trl]["peak_gib"]
            print(f"| {ours} / {trl} | {speed:.2f}x | {memory:.2f}x |")


if __name__ == "__main__":
    main()
