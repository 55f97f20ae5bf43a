"""`ipr-fit`: parse config → build tokenizer, data, module, trainer → fit → print a summary.

    ipr-fit --config configs/demo.yaml                 # the embedded SFT demo
    ipr-fit --config configs/demo.yaml optim.lr=1e-4   # overrides, key=value
    ipr-fit --config configs/demo.yaml --optim.lr=1e-4 # the form W&B sweeps pass
    ipr-fit --config configs/demo.yaml --resume        # continue from output_dir's last.ckpt
    ipr-fit --help-config                              # every key, its default and meaning
    ipr-fit --config C --memory-plan 24                # GPU memory per phase on 24 GiB, then exit
    (ipr-eval, in eval_cli.py, evaluates a run's adapter on held-out tasks.)

User mistakes (config, data files, model paths) end with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import csv
import errno
import json
import logging
import netrc
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, Strategy
from transformers import AutoConfig

from ipr_lightning import stopping
from ipr_lightning.callbacks import AdapterExport, IPRLoop, LastCheckpoint
from ipr_lightning.config import (
    ENV_EXPERT,
    HARMLESS_KEYS,
    ConfigError,
    RunConfig,
    TrainerConfig,
    config_changes,
    data_source,
    describe,
    load_config,
    save_config,
)
from ipr_lightning.data.datasets import PairDataset
from ipr_lightning.data.io import (
    DataFileError,
    read_pairs,
    read_trajectories,
    write_pairs,
    write_trajectories,
)
from ipr_lightning.data.records import PreferencePair, Trajectory
from ipr_lightning.data.render import TemplateError, ensure_chat_template
from ipr_lightning.envs import build_env
from ipr_lightning.ipr.experts import align_experts, expert_tasks
from ipr_lightning.lightning.datamodule import IPRDataModule
from ipr_lightning.lightning.module import IPRModule, NonFiniteTraining, shared_prefix_supported
from ipr_lightning.lightning.reference import reference_logps, with_reference
from ipr_lightning.memory_plan import format_plan, memory_plan, shape_of
from ipr_lightning.models import (
    REFERENCE,
    SCRATCH,
    build_scratch_model,
    init_adapter_path,
    load_tokenizer,
    resolve_model_path,
)
from ipr_lightning.precision import (
    compute_device,
    describe_machine,
    resolve_dtype,
    resolve_precision,
)
from ipr_lightning.rollout.openai_fleet import FleetUnavailable
from ipr_lightning.stopping import StopRequested

USER_ERRORS = (ConfigError, DataFileError, TemplateError, NonFiniteTraining, FleetUnavailable)
log = logging.getLogger("ipr_lightning")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="ipr-fit",
        allow_abbrev=False,
        description="Train an agent with SFT (then IPR iterations). Extra arguments are config "
        "overrides: key=value or --key=value.",
    )
    parser.add_argument("--config", help="YAML file merged over the schema defaults")
    parser.add_argument(
        "--resume", action="store_true", help="continue from <output_dir>/checkpoints/last.ckpt"
    )
    parser.add_argument(
        "--help-config",
        action="store_true",
        help="list every config key with its default and meaning",
    )
    parser.add_argument(
        "--memory-plan",
        type=float,
        nargs="?",
        const=0.0,
        metavar="GIB",
        help="print what the trainer and vLLM would hold on one GPU of GIB GiB in each phase "
        "(estimated from the model's config; default: this GPU's size, else 24) and exit",
    )
    return parser.parse_known_args(argv)


def checkpoint_to_resume(cfg: RunConfig, resume: bool) -> str | None:
    last = Path(cfg.output_dir) / "checkpoints" / "last.ckpt"
    if resume:
        if not last.is_file():
            raise ConfigError(f"--resume: no checkpoint at {last}")
        return str(last)
    if last.exists():
        raise ConfigError(
            f"{cfg.output_dir} already holds a run (found {last}); "
            "pass --resume to continue it or choose another output_dir"
        )
    return None


def check_resumed_config(cfg: RunConfig) -> dict[str, tuple[Any, Any]]:
    """A resumed run must go on under the settings its checkpoint and rollouts were made
    with. Allowed: the harmless keys (logging, progress, workers), the evaluation settings,
    more IPR iterations, and more epochs of an SFT-only run; anything else is refused with
    one line naming the keys. Returns the allowed changes (recorded by the caller)."""
    saved_file = Path(cfg.output_dir) / "config.yaml"
    if not saved_file.is_file():
        return {}
    saved = load_config(saved_file)
    now = cfg
    if cfg.model.name_or_path == SCRATCH:  # the saved config names the model folder it built
        now = replace(cfg, model=replace(cfg.model, name_or_path=saved.model.name_or_path))
    changes = config_changes(saved, now)
    sft_only = saved.ipr.iterations == 0 and cfg.ipr.iterations == 0

    def allowed(key: str, old: Any, new: Any) -> bool:
        if key.startswith((*HARMLESS_KEYS, "eval.")):
            return True
        if key == "ipr.iterations":
            return new >= old
        return key == "trainer.max_epochs" and sft_only and new >= old

    refused = [k for k, (old, new) in changes.items() if not allowed(k, old, new)]
    if refused:
        shown = ", ".join(f"{k} ({changes[k][0]!r} -> {changes[k][1]!r})" for k in refused[:4])
        more = f" and {len(refused) - 4} more" if len(refused) > 4 else ""
        raise ConfigError(
            f"--resume: {saved_file} was run with other settings: {shown}{more}; these change "
            "what the checkpoint and the stored rollouts mean. Put them back, or start a new "
            "output_dir"
        )
    return changes


def record_config_changes(out: Path, changes: dict[str, tuple[Any, Any]]) -> None:
    """Append the settings a resume changed to `<output_dir>/config_changes.jsonl`."""
    if not changes:
        return
    log.info("resumed with changed settings: %s", ", ".join(changes))
    row = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "changes": changes}
    with (out / "config_changes.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def check_wandb(cfg: RunConfig) -> None:
    """`wandb.mode=online` needs an API key; without one W&B would stop the run at its first
    log call (or wait for a prompt), after the model is loaded: say so before any work."""
    if not cfg.wandb.enabled or cfg.wandb.mode != "online" or os.environ.get("WANDB_API_KEY"):
        return
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        path = os.environ.get("NETRC") or None
        if netrc.netrc(path).authenticators(host or "api.wandb.ai"):
            return
    except (OSError, netrc.NetrcParseError):
        pass
    raise ConfigError(
        "wandb.mode=online needs a W&B API key: set WANDB_API_KEY or run `wandb login`, "
        "or use wandb.mode=offline (sync later with `wandb sync`)"
    )


def build_loggers(cfg: RunConfig) -> list[Logger]:
    loggers: list[Logger] = [CSVLogger(cfg.output_dir, name="logs")]
    if cfg.wandb.enabled:
        loggers.append(
            WandbLogger(
                project=cfg.wandb.project,
                name=cfg.wandb.name,
                save_dir=cfg.output_dir,
                mode=cfg.wandb.mode,
            )
        )
    return loggers


def build_strategy(t: TrainerConfig) -> str | Strategy:
    """`trainer.strategy` as Lightning's, with the ranks' waiting limit."""
    if t.strategy == "auto" and t.devices * t.num_nodes == 1:
        return "auto"
    timeout = timedelta(minutes=t.timeout_minutes)
    if t.strategy == "fsdp":
        if compute_device(t.accelerator) == "cpu":
            raise ConfigError(
                "trainer.strategy=fsdp needs GPUs (Lightning runs FSDP on CUDA only); "
                "use trainer.strategy=ddp on CPUs"
            )
        return FSDPStrategy(
            timeout=timeout,
            auto_wrap_policy=decoder_layers,  # one FSDP unit per transformer layer
            use_orig_params=True,  # LoRA: frozen and trained weights in one unit
        )
    return DDPStrategy(timeout=timeout)


def decoder_layers(module: torch.nn.Module, recurse: bool, nonwrapped_numel: int) -> bool:
    """FSDP's wrap policy: a unit per transformer block (`*DecoderLayer`, `*Block`)."""
    return recurse or type(module).__name__.endswith(("DecoderLayer", "Block"))


def launch_rank(t: TrainerConfig) -> int:
    """This process's global rank as its launcher set it before any process group exists:
    torchrun (RANK), SLURM (SLURM_PROCID), or Lightning's own launcher, which starts ranks
    1.. as copies of the command (LOCAL_RANK, NODE_RANK); 0 for the process a user started."""
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"])
    if "SLURM_PROCID" in env and t.devices * t.num_nodes > 1:
        return int(env["SLURM_PROCID"])
    return int(env.get("NODE_RANK", 0)) * t.devices + int(env.get("LOCAL_RANK", 0))


def build_trainer(cfg: RunConfig, loop: IPRLoop | None = None) -> L.Trainer:
    out = Path(cfg.output_dir)
    t = cfg.trainer
    extra: list[L.Callback] = [] if loop is None else [loop]
    return L.Trainer(
        default_root_dir=out,
        max_epochs=t.max_epochs if loop is None else loop.total_epochs,
        # IPR: each phase's DataModule contents (SFT data, then each iteration's pairs)
        reload_dataloaders_every_n_epochs=0 if loop is None else 1,
        # With IPR the module caps SFT at max_steps; the iterations after it must still run.
        max_steps=t.max_steps if loop is None else -1,
        accumulate_grad_batches=t.accumulate_grad_batches,
        precision=resolve_precision(t.precision, t.accelerator),
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=build_strategy(t),
        use_distributed_sampler=False,  # SeededBatches serves each rank its share
        log_every_n_steps=t.log_every_n_steps,
        val_check_interval=t.val_check_interval,
        enable_progress_bar=t.enable_progress_bar,
        gradient_clip_val=cfg.optim.grad_clip or None,
        num_sanity_val_steps=0,
        enable_checkpointing=False,  # LastCheckpoint below, not Lightning's default one
        inference_mode=False,  # metric state must stay usable across validate() and fit()
        logger=build_loggers(cfg),
        callbacks=[  # the checkpoint first: an epoch's end is saved before a phase's work
            LastCheckpoint(out / "checkpoints" / "last.ckpt", t.checkpoint_every_n_steps),
            *extra,
            LearningRateMonitor(logging_interval="step"),
            AdapterExport(out / "adapter"),
        ],
    )


def read_metric(metrics_csv: Path, key: str) -> list[float]:
    if not metrics_csv.is_file():
        return []
    with metrics_csv.open() as f:
        return [float(row[key]) for row in csv.DictReader(f) if row.get(key)]


def read_run_metric(logs: Path, key: str) -> list[float]:
    """`key` over every launch of a run (logs/version_0, version_1, ... in order)."""
    versions = sorted(logs.glob("version_*"), key=lambda p: int(p.name.split("_")[-1]))
    return [v for folder in versions for v in read_metric(folder / "metrics.csv", key)]


def summarise(cfg: RunConfig, trainer: L.Trainer, seconds: float, val_before: float | None) -> dict:
    metrics_csv = Path(trainer.loggers[0].log_dir) / "metrics.csv"
    # A resumed run: its own launch may have logged nothing (a finished fit is skipped)
    train = read_run_metric(metrics_csv.parent.parent, "train/loss")
    val = read_run_metric(metrics_csv.parent.parent, "val/loss")
    previous = Path(cfg.output_dir) / "summary.json"
    if val_before is None and previous.is_file():
        val_before = json.loads(previous.read_text()).get("val_loss_before")
    summary = {
        "wall_seconds": round(seconds, 1),
        "optimizer_steps": trainer.global_step,
        "train_loss_first": train[0] if train else None,
        "train_loss_last": train[-1] if train else None,
        "val_loss_before": val_before,
        "val_loss_after": val[-1] if val else None,
        "output_dir": cfg.output_dir,
        "metrics": str(metrics_csv),
        "adapter": str(Path(cfg.output_dir) / "adapter"),
        "phases": phase_rows(Path(cfg.output_dir)),
        "eval_split": cfg.eval.split,
    }
    if trainer.is_global_zero:
        (Path(cfg.output_dir) / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def phase_rows(out: Path) -> list[dict]:
    """One row per finished phase (SFT, iteration k): eval result, pairs, wall times."""
    path = out / "phases.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        k = row["phase"].removeprefix("iteration ")
        stats = out / f"iter_{k}" / "stats.json"
        if k.isdigit() and stats.is_file():
            row["explore"] = json.loads(stats.read_text())
        rows.append(row)
    return rows


def phase_table(rows: list[dict], split: str) -> str:
    def cell(x: float | None, f: str = ".3f") -> str:
        return "-" if x is None else format(x, f)

    lines = [
        f"  {'phase':12}{'success':>9}{'reward':>8}{'explore s':>11}{'train s':>9}"
        f"{'pairs out/step':>16}{'gen tokens':>12}{'MC rollouts':>13}{'per pair':>10}"
        f"{'MC tok/pair':>13}{'MC s/pair':>11}   ({split})"
    ]
    for r in rows:
        e = r.get("explore", {})
        pairs = f"{e['pairs/outcome']}/{e['pairs/step']}" if e else "-"
        lines.append(
            f"  {r['phase']:12}{cell(r.get('success_rate')):>9}{cell(r.get('avg_reward')):>8}"
            f"{cell(e.get('explore/wall_seconds'), '.1f'):>11}"
            f"{'skipped' if r.get('trained') is False else cell(r['train_seconds'], '.1f'):>9}"
            f"{pairs:>16}"
            f"{e.get('explore/generated_tokens', '-'):>12}"
            f"{e.get('explore/scorer_episodes', '-'):>13}"
            f"{cell(e.get('cost/scorer_episodes_per_pair'), '.1f'):>10}"
            f"{cell(e.get('cost/scorer_tokens_per_pair'), '.0f'):>13}"
            f"{cell(e.get('cost/scorer_seconds_per_pair'), '.2f'):>11}"
        )
    return "\n".join(lines)


def print_summary(s: dict) -> None:
    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.4f}"

    print(f"\nipr-fit finished in {s['wall_seconds']} s, {s['optimizer_steps']} optimizer steps")
    print(f"  train loss  first {fmt(s['train_loss_first'])} -> last {fmt(s['train_loss_last'])}")
    print(f"  val loss    before {fmt(s['val_loss_before'])} -> after {fmt(s['val_loss_after'])}")
    if s.get("phases"):
        print("  per phase (explore = the exploration that produced the phase's pairs):")
        print(phase_table(s["phases"], s["eval_split"]))
    print(
        f"  outputs     {s['output_dir']}/ (config.yaml, summary.json, logs/, checkpoints/, "
        "adapter/)"
    )


def env_expert_trajectories(cfg: RunConfig) -> list[Trajectory]:
    """The env's expert on its train split, written once into the run (resume reuses it)."""
    path = Path(data_source(cfg))
    if path.is_file():
        return read_trajectories(path)
    log.info("playing the %s expert on the %s split", cfg.env.name, cfg.env.train_split)
    trajectories = build_env(cfg.env, cfg.env.train_split).expert()
    if not trajectories:
        raise ConfigError(
            f"the {cfg.env.name} expert solved none of the {cfg.env.train_split} tasks within "
            f"env.max_turns={cfg.env.max_turns} (see the warnings above): no SFT data"
        )
    write_trajectories(path, trajectories)
    return trajectories


def build_ipr_loop(cfg: RunConfig, data: IPRDataModule) -> IPRLoop:
    """The IPR callback over the SFT trajectories as expert tasks of the train split. The
    trajectories are aligned with the env's prompt first (in-context example inserted where
    the file lacks it), and SFT trains on the aligned records: every stage sees one prompt."""
    train = build_env(cfg.env, cfg.env.train_split)
    source = data_source(cfg)
    aligned, _ = align_experts(train, data.read(), source)
    data.use_trajectories(aligned)
    tasks = expert_tasks(train, aligned, source, progress=cfg.trainer.enable_progress_bar)
    if cfg.ipr.max_tasks > 0:
        tasks = tasks[: cfg.ipr.max_tasks]
    splits = [cfg.eval.split, *cfg.eval.extra_splits] if cfg.ipr.eval_every_phase else []
    held_out = [build_env(cfg.env, split) for split in splits]
    return IPRLoop(
        cfg, data.tokenizer, tasks, train, held_out, progress=cfg.trainer.enable_progress_bar
    )


def scratch_model(cfg: RunConfig, trajectories: list[Trajectory]) -> Path:
    """`model.name_or_path: scratch`: the random Llama and the tokenizer trained on the
    expert data, built once in `<output_dir>/scratch_model/` (seeded by `seed`)."""
    if cfg.model.lora.enabled:
        raise ConfigError(
            "model.name_or_path=scratch trains every weight of a random model: set "
            "model.lora.enabled=false"
        )
    texts = (f"<|{t.role}|>\n{t.content}\n" for traj in trajectories for t in traj.turns)
    folder = Path(cfg.output_dir) / "scratch_model"
    return build_scratch_model(folder, texts, cfg.model.scratch, cfg.seed)


@contextmanager
def run_lock(output_dir: str | Path) -> Iterator[None]:
    """Hold `<output_dir>/.lock` for the whole run: a second `ipr-fit` on the same folder
    would interleave rollouts and checkpoints, so it is refused with one line. (An OS lock:
    it is released when the process dies, however it dies.)"""
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle = (out / ".lock").open("a+")
    except OSError as exc:
        raise ConfigError(f"output_dir {out}: cannot write there ({exc.strerror})") from None
    try:
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no fcntl (Windows): run unlocked
            pass
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise ConfigError(
                f"output_dir {out} is in use by another ipr-fit (pid {holder}); wait for it "
                "or choose another output_dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


def fit(cfg: RunConfig, resume: bool, *, evaluate_sft: bool = False) -> dict:
    """One run. `evaluate_sft`: an SFT-only run (ipr.iterations=0) is still evaluated on the
    held-out splits at its end, as an IPR run's SFT phase is (`ipr-bench`'s SFT cells).
    Ranks 1.. of a multi-process run neither lock the run nor write its files: rank 0 does."""
    if launch_rank(cfg.trainer):
        return _fit(cfg, resume, evaluate_sft)
    with run_lock(cfg.output_dir):
        return _fit(cfg, resume, evaluate_sft)


def _fit(cfg: RunConfig, resume: bool, evaluate_sft: bool = False) -> dict:
    writes = launch_rank(cfg.trainer) == 0
    ckpt = checkpoint_to_resume(cfg, resume)
    changes = check_resumed_config(cfg) if ckpt else {}
    check_wandb(cfg)
    if writes:
        record_config_changes(Path(cfg.output_dir), changes)
        save_config(cfg, Path(cfg.output_dir) / "config.yaml")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.model.init_adapter:
        init_adapter_path(cfg.model)  # a wrong folder: before any model work
    data = IPRDataModule(cfg.data, cfg.seed, shared_prefix=packs_pairs(cfg))
    if cfg.data.pairs_file:
        return _fit_pairs(cfg, data, ckpt)
    if cfg.data.train_file == ENV_EXPERT:
        data.use_trajectories(env_expert_trajectories(cfg))
    data.read()  # validate the data before any (slow) model work
    if cfg.model.name_or_path == SCRATCH:
        cfg.model.name_or_path = str(scratch_model(cfg, data.read()))
        if writes:
            save_config(cfg, Path(cfg.output_dir) / "config.yaml")  # names the folder it built
    data.connect(ensure_chat_template(load_tokenizer(cfg.model)))
    loop = build_ipr_loop(cfg, data) if cfg.ipr.iterations > 0 or evaluate_sft else None
    data.setup("fit")
    t = cfg.trainer
    module = IPRModule(
        cfg.model, cfg.optim, cfg.loss, sft_epochs=t.max_epochs, sft_max_steps=t.max_steps
    )
    trainer = build_trainer(cfg, loop)
    log.info(
        "machine: %s; precision %s -> %s, weights %s -> %s",
        describe_machine(t.accelerator),
        t.precision,
        trainer.precision,
        cfg.model.dtype,
        resolve_dtype(cfg.model.dtype, t.accelerator),
    )
    start = time.perf_counter()
    val_before = None
    if ckpt is None and data.val_data is not None:
        val_before = trainer.validate(module, datamodule=data, verbose=False)[0].get("val/loss")
    trainer.fit(module, datamodule=data, ckpt_path=ckpt)
    return summarise(cfg, trainer, time.perf_counter() - start, val_before)


def packs_pairs(cfg: RunConfig) -> bool:
    """Whether preference pairs are packed with their prompt once (`loss.shared_prefix`)."""
    return cfg.loss.shared_prefix == "auto" and shared_prefix_supported(cfg.model)


def pairs_module(cfg: RunConfig) -> IPRModule:
    """The module of a pairs-file run, its model loaded: it trains the preference objective
    from the start; its DPO reference is the starting policy (`model.init_adapter`, kept as
    a frozen copy) or, without one, the base model (adapters off)."""
    t = cfg.trainer
    reference = REFERENCE if cfg.model.init_adapter else None
    module = IPRModule(cfg.model, cfg.optim, cfg.loss, reference, t.max_epochs, t.max_steps)
    module.configure_model()
    module.phase = "preference"
    if reference is not None:
        module.freeze_policy(reference)
    return module


def pairs_with_reference(
    cfg: RunConfig,
    module: IPRModule,
    data: IPRDataModule,
    pairs: list[PreferencePair],
    out: Path,
    precision: Any = None,
    compute: bool | None = None,
) -> PairDataset:
    """Compute the reference log-probs of `pairs` when some lack them (`compute`, default
    `ipr.precompute_reference`; True: recompute all), write the pairs to `out` (atomically)
    and return them rendered."""
    rendered = PairDataset(pairs, data.tokenizer, cfg.data.max_length)
    missing = any(r.ref_chosen_logp is None or r.ref_rejected_logp is None for r in rendered.rows)
    if compute or (compute is None and missing and cfg.ipr.precompute_reference):
        log.info("reference log-probs of %d pairs", len(rendered.rows))
        values = reference_logps(
            module,
            rendered,
            cfg.data.batch_size,
            data.pair_collator(),
            precision,
            progress=cfg.trainer.enable_progress_bar,
        )
        pairs = with_reference(pairs, rendered, values)
    write_pairs(out, pairs)
    return rendered


def _fit_pairs(cfg: RunConfig, data: IPRDataModule, ckpt: str | None) -> dict:
    """`data.pairs_file`: preference training on a pairs file alone (no SFT, no env)."""
    out = Path(cfg.output_dir) / "pairs.json"
    prepared = out.is_file()  # a resumed run: the pairs as prepared the first time
    pairs = read_pairs(out if prepared else cfg.data.pairs_file)  # bad data: before the model
    data.connect(ensure_chat_template(load_tokenizer(cfg.model)))
    trainer = build_trainer(cfg)
    module = pairs_module(cfg)
    if prepared:
        data.use_pairs(out)
    else:
        forward = trainer.precision_plugin.forward_context()
        data.use_pairs(out, pairs_with_reference(cfg, module, data, pairs, out, forward))
    if not data.has_pairs:
        raise ConfigError(f"data.pairs_file {cfg.data.pairs_file}: no pair has a trained token")
    start = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=ckpt)
    return summarise(cfg, trainer, time.perf_counter() - start, None)


STORAGE_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def storage_message(exc: OSError) -> str:
    """A full disk or quota, or a file system gone read-only, in one line: what was being
    written, and that the run resumes once there is room (writes are atomic)."""
    where = f" writing {exc.filename}" if exc.filename else ""
    return (
        f"{exc.strerror or exc}{where}: make room (or fix the mount) and run the same command "
        "with --resume; files already written are whole"
    )


def stopped_message(tool: str, again: str) -> str:
    return (
        f"{tool}: stopped by SIGTERM at a rollout turn; every finished episode is kept "
        f"(rollouts.jsonl). Run the same command{again} to continue"
    )


def memory_plan_table(cfg: RunConfig, gpu_gib: float) -> str:
    if not gpu_gib:
        cuda = torch.cuda.is_available()
        gpu_gib = torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else 24.0
    path = resolve_model_path(cfg.model)
    model_config = AutoConfig.from_pretrained(path, trust_remote_code=cfg.model.trust_remote_code)
    plan = memory_plan(shape_of(model_config), cfg)
    return f"{cfg.model.name_or_path}, rollout.backend={cfg.rollout.backend}\n" + format_plan(
        plan, gpu_gib
    )


def fit_main(argv: list[str] | None = None) -> int:
    args, rest = parse_args(sys.argv[1:] if argv is None else argv)
    if args.help_config:
        print("\n".join(describe()))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, rest)
        if args.memory_plan is not None:
            print(memory_plan_table(cfg, args.memory_plan))
            return 0
        summary = fit(cfg, args.resume)
    except USER_ERRORS as exc:
        print(f"ipr-fit: error: {exc}", file=sys.stderr)
        return 2
    except StopRequested:
        print(stopped_message("ipr-fit", " with --resume"), file=sys.stderr)
        return stopping.EXIT_CODE
    except OSError as exc:
        if exc.errno not in STORAGE_FULL:
            raise
        print(f"ipr-fit: error: {storage_message(exc)}", file=sys.stderr)
        return 2
    if launch_rank(cfg.trainer) == 0:
        print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(fit_main())
