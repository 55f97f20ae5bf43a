"""Phase bookkeeping of `ipr-fit` with IPR iterations (tiny model, toy env, in process): SFT's
schedule and step cap belong to SFT alone, an iteration without pairs does not end the run,
a run killed during the last evaluation finishes it on resume, full fine-tuning runs IPR."""

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

from ipr_lightning.cli import fit_main

ROOT = Path(__file__).resolve().parents[1]


def ipr_fit(out: Path, cache_dir: str, *extra: str) -> int:
    args = [
        "--config", str(ROOT / "configs/tiny.yaml"), f"output_dir={out}",
        f"model.cache_dir={cache_dir}", "data.train_file=env:expert", "data.batch_size=1",
        "data.val_fraction=0", "env.options.n_train=2", "env.options.n_valid_unseen=1",
        "env.max_turns=8",
        "trainer.max_epochs=2", "ipr.epochs=1", "ipr.mc_samples=1", "ipr.max_tasks=1",
        "ipr.max_new_tokens=6", "eval.max_new_tokens=6", "ipr.max_live=8",
        "optim.warmup_ratio=0.3",
    ]  # fmt: skip
    return fit_main([*args, *extra])


def sft_lrs(out: Path) -> list[float]:
    """The learning rate of every SFT optimizer step, from the run's metrics."""
    with (out / "logs" / "version_0" / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("lr-AdamW")]
    return [float(r["lr-AdamW"]) for r in rows]


def phases(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "phases.jsonl").read_text().splitlines()]


NO_PAIRS = ("ipr.iterations=2", "ipr.tau_traj=1")  # no reward gap in [0, 1] is above 1


@pytest.fixture(scope="module")
def runs(tiny_model_cfg, tmp_path_factory):
    """SFT alone; the same SFT followed by 2 iterations that can build no pair; and one capped
    at 3 SFT steps with an iteration after it."""
    base = tmp_path_factory.mktemp("phases")
    sft, ipr, capped = base / "sft", base / "ipr", base / "capped"
    assert ipr_fit(sft, tiny_model_cfg.cache_dir) == 0
    assert ipr_fit(ipr, tiny_model_cfg.cache_dir, *NO_PAIRS) == 0
    assert ipr_fit(capped, tiny_model_cfg.cache_dir, "trainer.max_steps=3", *NO_PAIRS) == 0
    return sft, ipr, capped


def test_sft_schedule_and_step_cap_do_not_depend_on_the_iterations(runs):
    sft, ipr, capped = runs
    alone = sft_lrs(sft)
    assert len(alone) == 4  # 2 trajectories, batch 1, 2 epochs
    assert sft_lrs(ipr)[:4] == alone  # the same warm-up and decay with 2 iterations after it
    assert alone[-1] < max(alone)  # it decays within SFT
    # max_steps caps SFT (its schedule sized to 3 steps); the iterations still run
    assert len(sft_lrs(capped)) >= 3 and sft_lrs(capped)[:3] != alone[:3]
    assert [r["phase"] for r in phases(capped)] == ["sft", "iteration 1", "iteration 2"]
    summary = json.loads((capped / "summary.json").read_text())
    assert summary["phases"][0]["train_seconds"] is not None


def test_iterations_without_pairs_are_explored_evaluated_and_recorded(runs):
    _, ipr, _ = runs
    rows = phases(ipr)
    assert [r["phase"] for r in rows] == ["sft", "iteration 1", "iteration 2"]
    for row in rows[1:]:
        assert row["trained"] is False and "training skipped" in row["note"]
        assert 0.0 <= row["success_rate"] <= 1.0
    for k in (1, 2):
        assert (ipr / f"iter_{k}" / "pairs.json").is_file()
        assert json.loads((ipr / f"iter_{k}" / "stats.json").read_text())["pairs/trained"] == 0
    summary = json.loads((ipr / "summary.json").read_text())
    assert [p["phase"] for p in summary["phases"]] == ["sft", "iteration 1", "iteration 2"]


def test_a_kill_during_the_last_evaluation_is_finished_on_resume(runs, tiny_model_cfg, tmp_path):
    """The last checkpoint is saved before the last phase's evaluation; a kill there left
    the evaluation, its phase row, the summary and the adapter undone for good (Lightning
    skips a resumed fit whose epochs are all done)."""
    _, done, _ = runs
    out = tmp_path / "killed"
    shutil.copytree(done, out)
    for name in ("adapter", "eval/after_iter_2"):
        shutil.rmtree(out / name)
    (out / "summary.json").unlink()
    lines = (out / "phases.jsonl").read_text().splitlines(keepends=True)
    (out / "phases.jsonl").write_text("".join(lines[:-1]))  # killed before writing it
    assert ipr_fit(out, tiny_model_cfg.cache_dir, *NO_PAIRS, "--resume") == 0
    assert [r["phase"] for r in phases(out)] == ["sft", "iteration 1", "iteration 2"]
    assert phases(out)[2]["success_rate"] == phases(done)[2]["success_rate"]
    assert (out / "eval/after_iter_2/summary.json").is_file()
    assert (out / "adapter/adapter_config.json").is_file()
    summary = json.loads((out / "summary.json").read_text())  # not nulls (#16 item 7)
    assert summary["train_loss_first"] is not None and summary["train_loss_last"] is not None


def test_ipr_with_full_fine_tuning(tiny_model_cfg, tmp_path):
    """Without LoRA the SFT scorer/reference is a frozen copy of the SFT model (it crashed
    after SFT: no `peft_config`), saved beside the run for a resume."""
    out = tmp_path / "full"
    rc = ipr_fit(
        out,
        tiny_model_cfg.cache_dir,
        "model.lora.enabled=false",
        "ipr.iterations=1",
        "ipr.tau_traj=0.01",
        "ipr.tau_step=0",
    )
    assert rc == 0
    assert [r["phase"] for r in phases(out)] == ["sft", "iteration 1"]
    assert (out / "frozen_sft" / "config.json").is_file()
    assert (out / "adapter" / "config.json").is_file()  # the whole fine-tuned model


def test_a_second_run_on_the_same_output_dir_is_refused(tiny_model_cfg, tmp_path, capsys):
    """Two ipr-fit on one folder both ran (78 duplicate rollout keys, three checkpoints)."""
    import fcntl

    out = tmp_path / "busy"
    out.mkdir()
    with (out / ".lock").open("a+") as held:  # the first run holds the lock
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242\n")
        held.flush()
        assert ipr_fit(out, tiny_model_cfg.cache_dir) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "in use by another ipr-fit (pid 4242)" in err
    assert not (out / "config.yaml").exists()  # it touched nothing
    assert ipr_fit(out, tiny_model_cfg.cache_dir) == 0  # released: the run goes ahead


def _unwritable_output_dir(kind: str, tmp_path: Path) -> Path:
    if kind == "an existing file":
        (tmp_path / "taken").write_text("not a folder\n")
        return tmp_path / "taken"
    if kind == "a read-only folder":
        if os.geteuid() == 0:
            pytest.skip("root writes through permissions: the mode can't be checked here")
        parent = tmp_path / "locked"
        parent.mkdir(mode=0o555)
        return parent / "run"
    if not os.path.isdir("/sys/kernel"):
        pytest.skip("no sysfs here")
    return Path("/sys/ipr_lightning_run")  # sysfs takes no new folders (EPERM), even from root


@pytest.mark.parametrize("kind", ["an existing file", "a read-only folder", "/sys"])
def test_an_unwritable_output_dir_is_one_line(kind, tiny_model_cfg, tmp_path, capsys):
    """#16: output_dir read-only, on a read-only mount, or an existing file: tracebacks."""
    out = _unwritable_output_dir(kind, tmp_path)
    assert ipr_fit(out, tiny_model_cfg.cache_dir) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"output_dir {out}: cannot write there" in err


def test_resuming_from_sft_into_an_iteration_without_pairs(tiny_model_cfg, tmp_path, monkeypatch):
    """The SFT checkpoint holds the training loader's position; the iteration after it serves
    the one-batch 'no pairs' loader, which must accept that state on resume."""
    from ipr_lightning.ipr.explore import Exploration

    out, iteration = tmp_path / "run", Exploration.iteration

    def killed(self, *args, **kwargs):
        raise RuntimeError("killed during exploration")

    monkeypatch.setattr(Exploration, "iteration", killed)
    with pytest.raises(RuntimeError, match="killed during exploration"):
        ipr_fit(out, tiny_model_cfg.cache_dir, "ipr.iterations=1", "ipr.tau_traj=1")
    monkeypatch.setattr(Exploration, "iteration", iteration)
    assert (
        ipr_fit(out, tiny_model_cfg.cache_dir, "ipr.iterations=1", "ipr.tau_traj=1", "--resume")
        == 0
    )
    assert [r["phase"] for r in phases(out)] == ["sft", "iteration 1"]
