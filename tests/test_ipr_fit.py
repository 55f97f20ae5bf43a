"""`ipr-fit` runs SFT then IPR iterations end to end (tiny model, toy env), and a run killed
in the middle of Monte-Carlo scoring or of an iteration's training resumes to the same pairs,
with no episode lost or recorded twice."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from ipr_lightning.callbacks import IPRLoop

from ipr_lightning.config import LossConfig, OptimConfig, RunConfig
from ipr_lightning.data.io import read_pairs
from ipr_lightning.data.render import ensure_chat_template
from ipr_lightning.envs import build_env
from ipr_lightning.envs.base import build_prompt
from ipr_lightning.ipr.explore import IterationResult
from ipr_lightning.lightning.module import IPRModule
from ipr_lightning.models import load_model, load_tokenizer
from ipr_lightning.rollout.policy import HFPolicy, Sampling

ROOT = Path(__file__).resolve().parents[1]
IPR_FIT = str(Path(sys.executable).parent / "ipr-fit")


def ipr_args(out: Path, cache_dir: str) -> list[str]:
    return [
        "--config", str(ROOT / "configs/tiny.yaml"), f"output_dir={out}",
        f"--model.cache_dir={cache_dir}", "data.train_file=env:expert", "data.batch_size=4",
        "env.options.n_train=3", "env.options.n_valid_unseen=2", "env.max_turns=12",
        "trainer.max_epochs=1",
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


def _mc_running(out: Path) -> bool:
    store = out / "rollouts.jsonl"
    return store.is_file() and sum('"mc"' in line for line in store.read_text().splitlines()) > 3


def _training_iteration_1(out: Path) -> bool:
    return (out / "iter_1" / "pairs.json").is_file()


def _killed_where_meant(out: Path, point: str) -> bool:
    if point == "mc":  # MC under way: iteration 1's pairs not built yet
        return not (out / "iter_1" / "pairs.json").exists()
    # iteration 1 trains: its pairs are built, its phase (checkpoint + eval) not finished
    phases = out / "phases.jsonl"
    return "iteration 1" not in (phases.read_text() if phases.is_file() else "")


def resume_to_the_end_with_the_same_pairs(
    out: Path, reference: Path, cache_dir: str, *extra: str
) -> None:
    """Resume the killed run in `out` (started with `extra`) to its end; its pairs must be
    the reference run's."""
    resumed = start(out, cache_dir, "--resume", *extra)
    _, stderr = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, stderr[-4000:]
    for k in (1, 2):
        want = read_pairs(reference / f"iter_{k}" / "pairs.json")
        got = read_pairs(out / f"iter_{k}" / "pairs.json")
        assert [(p.id, p.chosen, p.rejected) for p in got] == [
            (p.id, p.chosen, p.rejected) for p in want
        ]


@pytest.mark.parametrize(
    ("point", "reached", "how"),
    [
        pytest.param("mc", _mc_running, signal.SIGKILL, id="kill-mc"),
        pytest.param("training", _training_iteration_1, signal.SIGKILL, id="kill-training"),
        # a scheduler's stop, honoured at the next rollout turn
        pytest.param("mc", _mc_running, signal.SIGTERM, id="sigterm-mc"),
    ],
)
def test_killed_run_resumes_to_the_same_pairs(
    ipr_run, tiny_model_cfg, tmp_path, point, reached, how
):
    reference, _ = ipr_run
    out = tmp_path / "killed"
    proc = start(out, tiny_model_cfg.cache_dir)
    store = out / "rollouts.jsonl"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None and not reached(out):
        time.sleep(0.02)
    proc.send_signal(how)
    sent = time.monotonic()
    _, stderr = proc.communicate()
    if how == signal.SIGTERM:
        assert time.monotonic() - sent < 10  # not at the end of the whole exploration
        assert proc.returncode == 143, stderr[-3000:]
        assert "Traceback" not in stderr
        assert "stopped by SIGTERM" in stderr.splitlines()[-1] and "--resume" in stderr
    assert _killed_where_meant(out, point), f"killed too late: not during {point}"
    resume_to_the_end_with_the_same_pairs(out, reference, tiny_model_cfg.cache_dir)
    phases = [json.loads(line)["phase"] for line in (out / "phases.jsonl").read_text().splitlines()]
    assert phases == ["sft", "iteration 1", "iteration 2"]  # each phase once, none lost
    keys = [tuple(json.loads(line)["key"]) for line in store.read_text().splitlines()]
    assert len(keys) == len(set(keys))  # no episode recorded twice
    ref_keys = [
        tuple(json.loads(line)["key"])
        for line in (reference / "rollouts.jsonl").read_text().splitlines()
    ]
    assert sorted(keys) == sorted(ref_keys)  # none lost


def test_explorer_is_the_current_policy_and_scorer_the_frozen_sft_copy(tiny_model_cfg, tmp_path):
    cfg = RunConfig(output_dir=str(tmp_path), model=tiny_model_cfg)
    cfg.ipr.iterations, cfg.ipr.reference = 2, "previous"
    tok = ensure_chat_template(load_tokenizer(tiny_model_cfg))
    model = load_model(tiny_model_cfg)
    handle = build_env(cfg.env, "train")
    loop = IPRLoop(cfg, tok, [], handle, [], progress=False)
    used = []

    def fake_iteration(k, explorer, scorer, **_):
        used.append((k, explorer, scorer))
        return IterationResult(k, [], {"explore/episodes": 0})

    trainer = SimpleNamespace(
        datamodule=SimpleNamespace(use_pairs=lambda path, rendered=None: None),
        accumulate_grad_batches=1,
        is_global_zero=True,
        world_size=1,
        loggers=[],
        global_step=0,
    )
    module = IPRModule(tiny_model_cfg, OptimConfig(), LossConfig())
    loop.setup(trainer, module, "fit")
    loop.exploration.iteration = fake_iteration
    module.model = model
    probe = [build_prompt("i", "t")]
    sampling = Sampling(max_new_tokens=8)
    sft_output = HFPolicy(model, tok).act(probe, sampling)
    loop._start_iteration(trainer, module, 1)
    with torch.no_grad():  # the policy trains on: only the `policy` adapter moves
        for name, p in model.named_parameters():
            if ".policy." in name and "lora_B" in name:
                p.normal_(0, 1.0)
    loop._start_iteration(trainer, module, 2)
    (_, explorer1, scorer1), (_, explorer2, scorer2) = used
    assert explorer2.adapter == "policy" and scorer2.adapter == "sft"
    assert scorer2.act(probe, sampling) == sft_output  # the scorer stayed the SFT policy
    assert explorer2.act(probe, sampling) != sft_output  # the explorer is the current policy
    assert module.reference_adapter == "previous"  # ETO's reference: policy at iteration start
    assert model.active_adapter == "policy"
    assert all(not p.requires_grad for n, p in model.named_parameters() if ".sft." in n)


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


def test_ten_kills_at_seeded_points_resume_to_the_uninterrupted_run(
    ipr_run, tiny_model_cfg, tmp_path
):
    """#16: one run SIGKILLed at 10 points picked from a seed (7 store sizes during
    exploration and MC, the start of iteration 1's exploration, of its training, and of its
    evaluation's aftermath), resumed each time, ends with the uninterrupted run's pairs,
    phase table, rollouts and adapter."""
    import random

    from safetensors.torch import load_file

    reference, _ = ipr_run
    keys = [json.loads(line)["key"] for line in (reference / "rollouts.jsonl").open()]
    n, n1 = len(keys), sum(k[0] <= 1 for k in keys)  # all; expert MC + iteration 1
    out = tmp_path / "run"
    checks = {
        "store": lambda k: _lines(out / "rollouts.jsonl") >= k,
        "phases": lambda k: _lines(out / "phases.jsonl") >= k,
        "pairs": lambda k: (out / f"iter_{k}" / "pairs.json").is_file(),
    }
    stores = random.Random(16).sample(range(1, n), 7)
    points = [(("store", k), (k, 1)) for k in stores]
    points += [(("phases", 1), (0, 0)), (("pairs", 1), (n1, 2)), (("phases", 2), (n1, 3))]
    for i, ((kind, k), _) in enumerate(sorted(points, key=lambda p: p[1])):
        proc = start(out, tiny_model_cfg.cache_dir, *(["--resume"] if i else []))
        deadline = time.monotonic() + 600
        while proc.poll() is None and not checks[kind](k) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, f"the run ended before point {kind} {k}"
        proc.kill()
        proc.communicate()
    resume_to_the_end_with_the_same_pairs(out, reference, tiny_model_cfg.cache_dir)

    def table(run: Path) -> list[tuple]:
        rows = [json.loads(line) for line in (run / "phases.jsonl").open()]
        return [(r["phase"], r["success_rate"], r.get("pairs")) for r in rows]

    assert table(out) == table(reference)
    got_keys = [json.loads(line)["key"] for line in (out / "rollouts.jsonl").open()]
    assert len(got_keys) == len({tuple(k) for k in got_keys}) == n
    want_w = load_file(reference / "adapter" / "adapter_model.safetensors")
    got_w = load_file(out / "adapter" / "adapter_model.safetensors")
    assert all(torch.equal(want_w[name], got_w[name]) for name in want_w)
