"""A run killed in the middle of an SFT epoch resumes from its last step checkpoint, is served
the rest of that epoch, and ends with the uninterrupted run's weights (#16 item 1); resuming
leaves one `last.ckpt`, not `last-v1.ckpt` beside it."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ipr_lightning.cli import fit_main
from ipr_lightning.lightning.module import IPRModule

ROOT = Path(__file__).resolve().parents[1]


def sft(out: Path, cache_dir: str, *extra: str) -> int:
    args = [
        "--config", str(ROOT / "configs/tiny.yaml"), f"output_dir={out}",
        f"model.cache_dir={cache_dir}", "data.val_fraction=0", "data.batch_size=2",
        "trainer.max_epochs=2", "trainer.checkpoint_every_n_steps=3",
    ]  # fmt: skip
    return fit_main([*args, *extra])


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "adapter" / "adapter_model.safetensors")


@pytest.mark.parametrize("killed_at", [5, 11])  # mid-epoch 1 (ckpt at step 3), mid-epoch 2
@pytest.mark.parametrize("grouped", ["true", "false"])
def test_sft_killed_mid_epoch_resumes_to_the_same_weights(
    tiny_model_cfg, tmp_path, monkeypatch, killed_at, grouped
):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    setting = f"data.group_by_length={grouped}"
    assert sft(whole, tiny_model_cfg.cache_dir, setting) == 0
    train_step = IPRModule.training_step

    def dies(self, batch, batch_idx):
        if self.trainer.global_step == killed_at:
            raise RuntimeError("killed")
        return train_step(self, batch, batch_idx)

    monkeypatch.setattr(IPRModule, "training_step", dies)
    with pytest.raises(RuntimeError, match="killed"):
        sft(killed, tiny_model_cfg.cache_dir, setting)
    saved = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == killed_at // 3 * 3  # the last step checkpoint
    monkeypatch.setattr(IPRModule, "training_step", train_step)
    assert sft(killed, tiny_model_cfg.cache_dir, setting, "--resume") == 0
    want, got = weights(whole), weights(killed)
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["last.ckpt"]


def test_a_diverging_run_stops_with_one_line_and_exports_nothing(tiny_model_cfg, tmp_path, capsys):
    """#16: `optim.lr=1e6` trained to an all-NaN adapter and exited 0. fp32 pinned: with
    `precision: auto` a CPU with native bf16 trains in bf16-mixed, where this run saturates
    to finite weights (loss stuck at ln V) instead of overflowing, and nothing diverges."""
    out = tmp_path / "nan"
    lr = ("optim.lr=1e6", "optim.warmup_ratio=0", "trainer.precision=32-true")
    assert sft(out, tiny_model_cfg.cache_dir, *lr) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("ipr-fit: error: training diverged") and "optim.lr" in last
    assert not (out / "adapter").exists()
    if (out / "checkpoints" / "last.ckpt").exists():  # only ever finite weights
        state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        assert all(t.isfinite().all() for t in state.values())


def test_a_full_disk_is_one_line_and_the_run_resumes(tiny_model_cfg, tmp_path, monkeypatch, capsys):
    """#16: disk full ended in a traceback."""
    import errno

    import ipr_lightning.callbacks.last_checkpoint as last_checkpoint

    out = tmp_path / "full"
    save = last_checkpoint.save_last
    calls = []

    def full_after_one(trainer, path):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(path) + ".tmp")
        save(trainer, path)

    monkeypatch.setattr(last_checkpoint, "save_last", full_after_one)
    assert sft(out, tiny_model_cfg.cache_dir) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        last.startswith("ipr-fit: error: No space left on device writing ") and "--resume" in last
    )
    monkeypatch.setattr(last_checkpoint, "save_last", save)
    assert sft(out, tiny_model_cfg.cache_dir, "--resume") == 0
