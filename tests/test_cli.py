"""The installed `ipr-fit` end to end on CPU: SFT, adapter export, resume, one-line errors."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parents[1]
IPR_FIT = str(Path(sys.executable).parent / "ipr-fit")


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run(
        [IPR_FIT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def sft_run(tiny_model_cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "sft"
    proc = run(
        "--config",
        str(ROOT / "configs/tiny.yaml"),
        f"output_dir={out}",
        f"--model.cache_dir={tiny_model_cfg.cache_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def metric_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_sft_runs_end_to_end_and_loss_decreases(sft_run):
    out, proc = sft_run
    for name in (
        "config.yaml",
        "summary.json",
        "checkpoints/last.ckpt",
        "adapter/adapter_config.json",
        "logs/version_0/metrics.csv",
    ):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["optimizer_steps"] == 16  # 58 train rows / batch 8 = 8 batches x 2 epochs
    assert summary["train_loss_last"] < summary["train_loss_first"]
    assert summary["val_loss_after"] < summary["val_loss_before"]
    assert "ipr-fit finished" in proc.stdout
    rows = metric_rows(out / "logs/version_0/metrics.csv")
    assert any(r.get("train/loss") for r in rows) and any(r.get("lr-AdamW") for r in rows)
    assert "lr: 0.01" in (out / "config.yaml").read_text()  # the resolved config, overrides in


def test_exported_adapter_loads_with_peft(sft_run, tiny_model_dir):
    out, _ = sft_run
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, out / "adapter")
    lora = {k: v for k, v in model.state_dict().items() if "lora_B" in k}
    assert lora and any(v.abs().sum() > 0 for v in lora.values())  # trained, not the zero init
    ckpt = torch.load(out / "checkpoints/last.ckpt", weights_only=False)
    trained = {k: v for k, v in ckpt["state_dict"].items() if "lora_B" in k}
    assert sorted(v.abs().sum().item() for v in lora.values()) == pytest.approx(
        sorted(v.abs().sum().item() for v in trained.values())
    )


def test_resume_continues_from_the_last_checkpoint(sft_run, tiny_model_cfg):
    out, _ = sft_run
    refused = run("--config", str(out / "config.yaml"))
    assert refused.returncode == 2 and "--resume" in refused.stderr
    proc = run(
        "--config",
        str(out / "config.yaml"),
        "--resume",
        "trainer.max_epochs=3",
        "wandb.enabled=true",
        "wandb.mode=offline",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["optimizer_steps"] == 24  # 16 done before + one more epoch of 8
    first_run = metric_rows(out / "logs/version_0/metrics.csv")
    resumed = metric_rows(out / "logs/version_1/metrics.csv")
    assert first_run, "the first run's metrics must survive the resume"
    steps = [int(r["step"]) for r in resumed if r.get("train/loss")]
    assert steps and min(steps) >= 16
    assert list((out / "wandb").glob("offline-run-*")), "W&B offline run directory"
    (recorded,) = [json.loads(line) for line in (out / "config_changes.jsonl").open()]
    assert recorded["changes"]["trainer.max_epochs"] == [2, 3]
    assert "wandb.enabled" in recorded["changes"]


def test_resume_with_changed_settings_is_refused_naming_them(sft_run):
    """#16 item 5: a resume under other settings mixed two runs in one folder."""
    out, _ = sft_run
    before = (out / "config.yaml").read_text()
    proc = run("--config", str(out / "config.yaml"), "--resume", "seed=7", "optim.lr=0.5")
    line = one_line_error(proc)
    assert "optim.lr (0.01 -> 0.5)" in line and "seed (0 -> 7)" in line
    assert (out / "config.yaml").read_text() == before


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_max_length_below_every_prompt_is_one_line_exit_2(tmp_path, tiny_model_cfg):
    """#16: every SFT row skipped ended in an IndexError inside validation."""
    line = one_line_error(
        run(
            "--config",
            str(ROOT / "configs/tiny.yaml"),
            f"output_dir={tmp_path / 'r'}",
            f"--model.cache_dir={tiny_model_cfg.cache_dir}",
            "data.max_length=16",
        )  # fmt: skip
    )
    assert "data.max_length=16" in line and "raise data.max_length" in line


def test_misspelt_key_is_one_line_exit_2(tmp_path):
    line = one_line_error(run("--config", str(ROOT / "configs/tiny.yaml"), "optim.lrr=1"))
    assert "optim.lrr" in line
    line = one_line_error(
        run("--config", str(ROOT / "configs/tiny.yaml"), "--trainer.max_epochs=x")
    )
    assert "trainer.max_epochs" in line


def test_malformed_data_file_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": "t0", "conversations": [{"from": "gpt", "value": "x"}]}]))
    line = one_line_error(
        run(
            "--config",
            str(ROOT / "configs/tiny.yaml"),
            f"data.train_file={bad}",
            f"output_dir={tmp_path / 'o'}",
            f"model.cache_dir={tmp_path / 'cache'}",  # empty: building a model would show
        )
    )
    assert str(bad) in line and "record 0 (id='t0')" in line and "conversations[0]" in line
    assert not (tmp_path / "cache").exists(), "the data must be checked before any model work"


def test_wandb_online_without_a_key_is_one_line_exit_2(tmp_path, monkeypatch):
    from ipr_lightning.cli import check_wandb
    from ipr_lightning.config import RunConfig, WandbConfig

    for key in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    proc = subprocess.run(
        [IPR_FIT, "--config", str(ROOT / "configs/tiny.yaml"), f"output_dir={tmp_path / 'o'}",
         "wandb.enabled=true", "wandb.mode=online"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "WANDB_API_KEY" in one_line_error(proc)
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password k\n")
    (tmp_path / ".netrc").chmod(0o600)
    check_wandb(RunConfig(wandb=WandbConfig(enabled=True, mode="online")))  # a key: fine


def test_help_config_lists_keys():
    proc = run("--help-config")
    assert proc.returncode == 0 and "optim.lr = 2e-05" in proc.stdout


def test_ipr_eval_runs_on_a_trained_run(sft_run):
    out, _ = sft_run
    ipr_eval = str(Path(sys.executable).parent / "ipr-eval")
    env = {**os.environ, "WANDB_MODE": "offline"}
    args = [
        "--run",
        str(out),
        "eval.max_episodes=3",
        "env.max_turns=2",
        "eval.max_new_tokens=6",
        "eval.split=valid_seen",
    ]
    proc = subprocess.run(
        [ipr_eval, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "success rate" in proc.stdout
    lines = (out / "eval/valid_seen/transcripts.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 3 and all(r["turns"] == 2 and r["truncated"] for r in records)
    assert records[0]["conversations"][1] == {"from": "gpt", "value": "OK"}
    summary = json.loads((out / "eval/valid_seen/summary.json").read_text())
    assert summary["episodes"] == 3 and 0.0 <= summary["invalid_rate"] <= 1.0
    bad = subprocess.run(
        [ipr_eval, "eval.split=valid_seen"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert one_line_error(bad).endswith("give exactly one of --run DIR or --config FILE")
