"""`ipr-fit` runs SFT then IPR iterations end to end (tiny model, toy env), and a run killed
in the middle of Monte-Carlo scoring resumes to the same pairs."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ipr_lightning.data.io import read_pairs

ROOT = Path(__file__).resolve().parents[1]
IPR_FIT = str(Path(sys.executable).parent / "ipr-fit")


def ipr_args(out: Path, cache_dir: str) -> list[str]:
    return [
        "--config", str(ROOT / "configs/tiny.yaml"), f"output_dir={out}",
        f"--model.cache_dir={cache_dir}", "data.train_file=env:expert", "data.batch_size=4",
        "env.n_train=3", "env.n_valid_unseen=2", "env.max_turns=12", "trainer.max_epochs=1",
        "ipr.iterations=2", "ipr.epochs=1", "ipr.mc_samples=2", "ipr.max_new_tokens=8",
        "ipr.lr=1e-3", "eval.max_new_tokens=8", "ipr.max_live=4",
    ]  # fmt: skip


def start(out: Path, cache_dir: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.Popen(
        [IPR_FIT, *ipr_args(out, cache_dir), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def ipr_run(tiny_model_cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("ipr") / "run"
    proc = start(out, tiny_model_cfg.cache_dir)
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr[-4000:]
    return out, stdout


def test_sft_then_two_iterations_in_one_fit(ipr_run):
    out, stdout = ipr_run
    phases = [json.loads(line) for line in (out / "phases.jsonl").read_text().splitlines()]
    assert [p["phase"] for p in phases] == ["sft", "iteration 1", "iteration 2"]
    assert all(0.0 <= p["success_rate"] <= 1.0 and p["episodes"] == 2 for p in phases)
    for k in (1, 2):
        pairs = read_pairs(out / f"iter_{k}" / "pairs.json")
        stats = json.loads((out / f"iter_{k}" / "stats.json").read_text())
        assert len(pairs) == stats["pairs/outcome"] + stats["pairs/step"] > 0
        assert all(p.iteration == k and p.ref_chosen_logp is not None for p in pairs)
        assert stats["explore/episodes"] == sum(
            1
            for line in (out / "rollouts.jsonl").read_text().splitlines()
            if json.loads(line)["key"][:2] == [k, "explore"]
        )
    assert (out / "adapter_sft" / "adapter_config.json").is_file()
    metrics = (out / "logs" / "version_0" / "metrics.csv").read_text()
    assert "train/loss_outcome_dpo" in metrics and "eval/success_rate" in metrics
    assert "iteration 2" in stdout


def test_killed_mid_mc_resumes_to_the_same_pairs(ipr_run, tiny_model_cfg, tmp_path):
    reference, _ = ipr_run
    out = tmp_path / "killed"
    proc = start(out, tiny_model_cfg.cache_dir)
    store = out / "rollouts.jsonl"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if store.is_file() and sum('"mc"' in line for line in store.read_text().splitlines()) > 3:
            break
        time.sleep(0.1)
    proc.kill()
    proc.communicate()
    assert not (out / "iter_1" / "pairs.json").exists(), "killed too late: no MC in progress"
    resumed = start(out, tiny_model_cfg.cache_dir, "--resume")
    _, stderr = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, stderr[-4000:]
    for k in (1, 2):
        want = read_pairs(reference / f"iter_{k}" / "pairs.json")
        got = read_pairs(out / f"iter_{k}" / "pairs.json")
        assert [(p.id, p.chosen, p.rejected) for p in got] == [
            (p.id, p.chosen, p.rejected) for p in want
        ]
    keys = [tuple(json.loads(line)["key"]) for line in store.read_text().splitlines()]
    assert len(keys) == len(set(keys))  # no episode recorded twice
    ref_keys = [
        tuple(json.loads(line)["key"])
        for line in (reference / "rollouts.jsonl").read_text().splitlines()
    ]
    assert sorted(keys) == sorted(ref_keys)  # none lost
