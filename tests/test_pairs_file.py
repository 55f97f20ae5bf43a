"""`ipr-fit data.pairs_file=...`: DPO + NLL on a user's own pairs file, no SFT, no env; its
reference log-probs computed once (or by `ipr-data pairs reference`), the reference being the
base model or `model.init_adapter`; the file's order kept on request."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ipr_lightning.data.datasets import SeededBatches
from ipr_lightning.data.io import read_pairs, write_pairs
from ipr_lightning.data.records import PreferencePair, Turn

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
START = [
    Turn("user", "You are in a house. Act as: Thought: ...\nAction: ..."),
    Turn("assistant", "OK"),
    Turn("user", "Your task is to: put a mug on shelf 1."),
]


def user_pairs(n: int = 6) -> list[PreferencePair]:
    out = []
    for i in range(n):
        history = [
            Turn("assistant", f"Thought: search.\nAction: go to cabinet {i}"),
            Turn("user", f"Observation: On the cabinet {i}, you see a cup {i}."),
        ] * (i % 3)
        out.append(
            PreferencePair(
                f"mine-{i}", START + history,
                [Turn("assistant", f"Thought: found.\nAction: take mug {i} from shelf 2")],
                [Turn("assistant", "Thought: hm.\nAction: look")],
                pair_type="step" if i % 2 else "outcome", prompt_start=3,
            )
        )  # fmt: skip
    return out


def run(tool: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.run(
        [str(BIN / tool), *args], env=env, capture_output=True, text=True, timeout=600
    )


def fit_args(out: Path, cache_dir: str, pairs: Path, *extra: str) -> list[str]:
    return [
        "--config", str(ROOT / "configs/tiny.yaml"), f"output_dir={out}",
        f"model.cache_dir={cache_dir}", f"data.pairs_file={pairs}", "data.batch_size=2",
        "trainer.max_epochs=2", "trainer.log_every_n_steps=1", "loss.w_sft=0", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def pairs_run(tiny_model_cfg, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pairs")
    write_pairs(tmp / "mine.json", user_pairs())
    proc = run("ipr-fit", *fit_args(tmp / "run", tiny_model_cfg.cache_dir, tmp / "mine.json"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return tmp


def _metric(run_dir: Path, key: str) -> list[float]:
    with (run_dir / "logs" / "version_0" / "metrics.csv").open() as f:
        return [float(r[key]) for r in csv.DictReader(f) if r.get(key)]


def test_a_pairs_file_alone_trains_the_preference_objective(pairs_run):
    out = pairs_run / "run"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["optimizer_steps"] == 2 * math.ceil(6 / 2)  # 2 epochs of 3 batches
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert not (out / "expert_trajectories.json").exists()  # no SFT data, no env
    assert not (out / "rollouts.jsonl").exists() and not list(out.glob("iter_*"))
    prepared = read_pairs(out / "pairs.json")
    assert [p.id for p in prepared] == [f"mine-{i}" for i in range(6)]
    assert all(p.ref_chosen_logp < 0 and p.ref_rejected_logp < 0 for p in prepared)
    # a fresh LoRA starts as the reference (the base model): no margin at the first step
    assert _metric(out, "rewards/margins")[0] == pytest.approx(0.0, abs=1e-5)
    assert _metric(out, "rewards/margins")[-1] != pytest.approx(0.0, abs=1e-5)


def test_ipr_data_pairs_reference_gives_the_runs_values(pairs_run, tiny_model_cfg):
    out = pairs_run / "ref.json"
    proc = run(
        "ipr-data", "pairs", "reference", "--config", str(ROOT / "configs/tiny.yaml"),
        "--out", str(out), f"model.cache_dir={tiny_model_cfg.cache_dir}",
        f"data.pairs_file={pairs_run / 'mine.json'}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "6 pairs with reference log-probs" in proc.stdout
    mine, theirs = read_pairs(out), read_pairs(pairs_run / "run" / "pairs.json")
    for a, b in zip(mine, theirs, strict=True):
        assert a.ref_chosen_logp == pytest.approx(b.ref_chosen_logp, abs=1e-4)
        assert a.ref_rejected_logp == pytest.approx(b.ref_rejected_logp, abs=1e-4)


def test_init_adapter_is_the_start_and_the_reference(pairs_run, tiny_model_cfg):
    adapter = pairs_run / "run" / "adapter"
    out = pairs_run / "from_adapter"
    args = fit_args(out, tiny_model_cfg.cache_dir, pairs_run / "mine.json")
    proc = run("ipr-fit", *args, f"model.init_adapter={adapter}", "trainer.max_epochs=1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    base = read_pairs(pairs_run / "run" / "pairs.json")
    tuned = read_pairs(out / "pairs.json")
    assert any(
        abs(a.ref_chosen_logp - b.ref_chosen_logp) > 1e-3 for a, b in zip(base, tuned, strict=True)
    )
    # the policy starts from the adapter it is compared with: again no margin at first
    assert _metric(out, "rewards/margins")[0] == pytest.approx(0.0, abs=1e-5)


def test_pairs_file_mistakes_are_one_line(pairs_run, tiny_model_cfg, tmp_path):
    mine = pairs_run / "mine.json"
    for extra, named in [
        (["ipr.iterations=1"], "set ipr.iterations=0"),
        ([f"data.pairs_file={tmp_path / 'nope.json'}"], "nope.json"),
        ([f"model.init_adapter={tmp_path}"], "model.init_adapter"),
        (["loss.shared_prefix=always"], "loss.shared_prefix"),
    ]:
        proc = run("ipr-fit", *fit_args(tmp_path / "bad", tiny_model_cfg.cache_dir, mine, *extra))
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and named in lines[0], proc.stderr[-2000:]


def test_unshuffled_batches_keep_the_data_order():
    batches = SeededBatches(7, 3, seed=5, lengths=[9, 1, 8, 2, 7, 3, 6], shuffle=False)
    assert list(batches) == [[0, 1, 2], [3, 4, 5], [6]] == list(batches)
    assert list(SeededBatches(7, 3, seed=5)) != [[0, 1, 2], [3, 4, 5], [6]]
