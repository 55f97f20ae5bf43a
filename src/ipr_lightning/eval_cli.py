"""`ipr-eval`: run a trained policy on held-out tasks with batched lock-step rollouts.

    ipr-eval --run outputs/demo                          # a run's config.yaml and adapter/
    ipr-eval --run outputs/demo eval.split=valid_seen eval.max_episodes=20
    ipr-eval --config configs/alfworld.yaml --adapter PATH --out DIR
    ipr-eval --config configs/demo.yaml --no-adapter     # the base model, untrained

Writes <out>/transcripts.jsonl (one episode per line) and <out>/summary.json, prints the
report. The default <out> is <run>/eval/<split>.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from ipr_lightning import stopping
from ipr_lightning.cli import USER_ERRORS
from ipr_lightning.config import ConfigError, RunConfig, load_config
from ipr_lightning.data.render import ensure_chat_template
from ipr_lightning.envs import build_env
from ipr_lightning.models import (
    can_merge_exactly,
    load_adapter_weights,
    load_model,
    load_tokenizer,
)
from ipr_lightning.rollout.evaluate import EvalReport, evaluate
from ipr_lightning.rollout.policy import HFPolicy, Policy, Sampling
from ipr_lightning.rollout.serving import adapter_server
from ipr_lightning.stopping import StopRequested


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="ipr-eval",
        allow_abbrev=False,
        description="Evaluate a policy on held-out tasks. Extra arguments are config "
        "overrides: key=value or --key=value.",
    )
    parser.add_argument("--run", help="a run directory of ipr-fit (config.yaml + adapter/)")
    parser.add_argument("--config", help="a config YAML (instead of --run)")
    parser.add_argument("--adapter", help="adapter folder to evaluate (default: <run>/adapter)")
    parser.add_argument("--no-adapter", action="store_true", help="evaluate the base model")
    parser.add_argument("--out", help="output folder (default: <run>/eval/<split>)")
    return parser.parse_known_args(argv)


def resolve(args: argparse.Namespace, overrides: list[str]) -> tuple[RunConfig, Path | None, Path]:
    if bool(args.run) == bool(args.config):
        raise ConfigError("give exactly one of --run DIR or --config FILE")
    config = Path(args.run) / "config.yaml" if args.run else Path(args.config)
    cfg = load_config(config, overrides)
    adapter = None
    if not args.no_adapter:
        adapter = (
            Path(args.adapter)
            if args.adapter
            else (Path(args.run) / "adapter" if args.run else None)
        )
        if adapter is not None and not adapter.is_dir():
            raise ConfigError(f"adapter folder not found: {adapter}")
    base = Path(args.run) if args.run else Path(cfg.output_dir)
    out = Path(args.out) if args.out else base / "eval" / cfg.eval.split
    return cfg, adapter, out


def build_policy(cfg: RunConfig, adapter: Path | None) -> Policy:
    tokenizer = ensure_chat_template(load_tokenizer(cfg.model))
    server = adapter_server(cfg)
    if server is not None:
        return server.policy(tokenizer, adapter)
    if adapter is not None and not cfg.model.lora.enabled:
        cfg.model.name_or_path = str(adapter)  # full fine-tuning saved the whole model
        adapter = None
    model = load_model(cfg.model)
    if adapter is not None:
        load_adapter_weights(model, adapter)
    if can_merge_exactly(model):
        # One adapter, no training: fold it into the fp32 weights (one rounding, ~1e-7).
        # Decoding then skips the extra LoRA matmuls and Python hops in every linear layer
        # (several times faster on CPU). bf16/fp16 or 4-bit weights keep the adapter unmerged:
        # merging would round the LoRA update into them and evaluate a different policy.
        model = model.merge_and_unload()
    if torch.cuda.is_available() and cfg.model.quantization == "none":
        model = model.cuda()
    return HFPolicy(
        model, tokenizer, batch_size=cfg.eval.batch_size, kv_cache_gb=cfg.eval.kv_cache_gb
    )


def run_eval(cfg: RunConfig, adapter: Path | None, out: Path) -> EvalReport:
    handle = build_env(cfg.env, cfg.eval.split)  # fails fast on a bad env config
    policy = build_policy(cfg, adapter)
    e = cfg.eval
    sampling = Sampling(
        temperature=e.temperature,
        max_new_tokens=e.max_new_tokens,
        seed=cfg.seed,
        action_end=handle.action_end,
    )
    report, _ = evaluate(
        handle, policy, sampling, max_episodes=e.max_episodes, max_live=e.max_live, out_dir=out
    )
    return report


def main(argv: list[str] | None = None) -> int:
    args, rest = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg, adapter, out = resolve(args, rest)
        report = run_eval(cfg, adapter, out)
    except USER_ERRORS as exc:
        print(f"ipr-eval: error: {exc}", file=sys.stderr)
        return 2
    except StopRequested:
        print("ipr-eval: stopped by SIGTERM; nothing written", file=sys.stderr)
        return stopping.EXIT_CODE
    print(
        f"\nipr-eval: {cfg.env.name} {cfg.eval.split}, "
        f"adapter {adapter if adapter else 'none (base model)'}"
    )
    print(report.table())
    print(f"  outputs        {out}/ (transcripts.jsonl, summary.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
