"""`ipr-fit` on two CPU ranks (Lightning DDP over gloo, tiny model, toy env): the same
iteration-1 pairs and evaluation as one process, each episode in exactly one rank's rollouts
file, the phase table written once; a run killed with one world size resumed with another.

SFT runs at a learning rate too small to move an fp32 weight, so both runs explore with the
same policy: DDP's two half-batches would otherwise train a (slightly) different model than
one process does, and the comparison would say nothing about the exploration."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ipr_lightning.cli import build_strategy, decoder_layers
from ipr_lightning.config import ConfigError, load_config
from ipr_lightning.data.datasets import SeededBatches
from ipr_lightning.data.io import read_pairs
from ipr_lightning.models import build_bnb_config

ROOT = Path(__file__).resolve().parents[1]
IPR_FIT = str(Path(sys.executable).with_name("ipr-fit"))
TWO_RANKS = ("trainer.devices=2", "trainer.strategy=ddp")


def start(out: Path, cache_dir: str, *extra: str) -> subprocess.Popen:
    args = [
        "--config", str(ROOT / "configs/tiny.yaml"), f"output_dir={out}",
        f"model.cache_dir={cache_dir}", "data.train_file=env:expert", "data.batch_size=1",
        "data.val_fraction=0", "env.options.n_train=4", "env.options.n_valid_unseen=3",
        "env.max_turns=8", "trainer.max_epochs=1", "ipr.iterations=1", "ipr.epochs=1",
        "ipr.mc_samples=2", "ipr.max_new_tokens=6", "eval.max_new_tokens=6", "ipr.max_live=2",
        "optim.lr=1e-30", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu",
    ]  # fmt: skip
    return subprocess.Popen(
        [IPR_FIT, *args, *extra],
        env={**os.environ, "WANDB_MODE": "offline"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: a kill reaches every rank
    )


def finish(proc: subprocess.Popen) -> None:
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-4000:]


def episode_keys(out: Path) -> Counter:
    """How many times each episode key is recorded, over every rank's rollouts file."""
    return Counter(
        tuple(json.loads(line)["key"])
        for f in sorted(out.glob("rollouts*.jsonl"))
        for line in f.read_text().split("\n")[:-1]  # a torn tail no rank owns is not a record
    )


def phases(out: Path) -> list[str]:
    return [json.loads(line)["phase"] for line in (out / "phases.jsonl").read_text().splitlines()]


def results(out: Path) -> tuple:
    pairs = read_pairs(out / "iter_1" / "pairs.json")
    summary = json.loads((out / "eval" / "after_sft" / "summary.json").read_text())
    summary.pop("wall_seconds")
    sides = [(p.id, p.chosen, p.rejected, p.ref_chosen_logp, p.ref_rejected_logp) for p in pairs]
    return sides, summary


def test_strategies_from_the_config():
    t = load_config(None, ["trainer.devices=2", "trainer.timeout_minutes=7"]).trainer
    ddp = build_strategy(t)
    assert type(ddp).__name__ == "DDPStrategy" and ddp._timeout == timedelta(minutes=7)
    assert build_strategy(load_config(None, []).trainer) == "auto"  # one device
    cpu = ["trainer.strategy=fsdp", "trainer.accelerator=cpu", "trainer.devices=2"]
    with pytest.raises(ConfigError, match="fsdp needs GPUs"):
        build_strategy(load_config(None, cpu).trainer)
    with pytest.raises(ConfigError, match="trainer.strategy must be one of"):
        load_config(None, ["trainer.strategy=deepspeed"])


def test_fsdp_wraps_each_decoder_layer_and_stores_nf4_in_the_compute_dtype(tiny_model_cfg):
    shape = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2}
    model = LlamaForCausalLM(LlamaConfig(**shape, num_hidden_layers=2, vocab_size=50))
    wrapped = [type(m).__name__ for m in model.modules() if decoder_layers(m, False, 0)]
    assert wrapped == ["LlamaDecoderLayer", "LlamaDecoderLayer"]
    assert decoder_layers(model, True, 0)  # recurse everywhere
    nf4 = replace(tiny_model_cfg, dtype="bfloat16", quantization="nf4")
    assert build_bnb_config(nf4, sharded=True).bnb_4bit_quant_storage == torch.bfloat16
    assert build_bnb_config(nf4).bnb_4bit_quant_storage == torch.uint8


def test_each_rank_is_served_its_share_of_the_epochs_batches():
    every = list(SeededBatches(11, 2, seed=3))  # 6 batches
    shares = [list(SeededBatches(11, 2, seed=3, rank=r, world=4)) for r in range(4)]
    assert [len(s) for s in shares] == [2, 2, 2, 2]  # as many steps on every rank
    assert [s[i] for i in range(2) for s in shares] == every + every[:2]  # padded, in order


def test_a_pass_cut_short_resumes_on_another_number_of_ranks():
    every = list(SeededBatches(11, 2, seed=3))
    two = SeededBatches(11, 2, seed=3, rank=0, world=2)
    iter(two)
    two.trained = 2  # two steps on each of two ranks: the first 4 batches
    alone = SeededBatches(11, 2, seed=3)
    alone.load_state_dict(two.state_dict())
    assert list(alone) == every[4:]
    four = [SeededBatches(11, 2, seed=3, rank=r, world=4) for r in range(4)]
    for s in four:
        s.load_state_dict(two.state_dict())
    served = {tuple(b) for s in four for b in s}
    assert {tuple(b) for b in every[4:]} <= served  # none skipped (padding repeats a few)


@pytest.fixture(scope="module")
def runs(tiny_model_cfg, tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    finish(start(base / "one", tiny_model_cfg.cache_dir))
    finish(start(base / "two", tiny_model_cfg.cache_dir, *TWO_RANKS))
    return base / "one", base / "two"


def test_two_ranks_explore_evaluate_and_pair_as_one_process(runs):
    one, two = runs
    pairs, summary = results(one)
    assert pairs and results(two) == (pairs, summary)
    assert sorted(p.name for p in two.glob("rollouts*.jsonl")) == [
        "rollouts.jsonl",
        "rollouts.rank1.jsonl",
    ]
    assert all((two / name).stat().st_size for name in ("rollouts.jsonl", "rollouts.rank1.jsonl"))
    keys = episode_keys(two)
    assert max(keys.values()) == 1 and set(keys) == set(episode_keys(one))
    assert phases(two) == ["sft", "iteration 1"]  # written once, by rank 0


def _mc_under_way(out: Path) -> bool:
    return sum(k[1] == "mc" for k in episode_keys(out)) > 3


@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2)], ids=["2to1", "1to2"])
def test_a_run_killed_on_one_world_size_resumes_on_another(
    runs, tiny_model_cfg, tmp_path, before, after
):
    one, _ = runs
    out, ranks = tmp_path / "run", {1: (), 2: TWO_RANKS}
    proc = start(out, tiny_model_cfg.cache_dir, *ranks[before])
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None and not _mc_under_way(out):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert not (out / "iter_1" / "pairs.json").exists(), "killed too late: not during MC"
    finish(start(out, tiny_model_cfg.cache_dir, "--resume", *ranks[after]))
    assert results(out) == results(one)
    keys = episode_keys(out)
    assert max(keys.values()) == 1 and set(keys) == set(episode_keys(one))  # none twice, none lost
    assert phases(out) == ["sft", "iteration 1"]
    changes = (out / "config_changes.jsonl").read_text()
    assert "trainer.devices" in changes
