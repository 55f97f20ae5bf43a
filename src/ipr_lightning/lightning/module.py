"""IPRModule: the LightningModule that trains SFT, then the IPR preference objective.

Phase `sft` minimises the assistant-only NLL. Phase `preference` runs the policy on chosen
and rejected sequences in one forward and minimises
`w_sft·NLL + w_outcome·DPO(outcome pairs) + w_step·DPO(step pairs)`; reference log-probs come
precomputed in the batch or are computed without grad from the reference (adapters disabled,
or a frozen named adapter such as the SFT copy).

The learning-rate schedule belongs to the phase: `begin_phase(kind, total_steps)` restarts
warm-up and decay over that phase's own step count (never `estimated_stepping_batches`,
which is sized from the first phase's data). Checkpoints hold adapter and optimizer state,
not the (possibly 4-bit) base model.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import lightning as L
import torch
from torchmetrics import MeanMetric

from ipr_lightning.config import LossConfig, ModelConfig, OptimConfig
from ipr_lightning.losses import (
    ipr_objective,
    label_logps,
    nll_from_logps,
    per_sequence,
    select_label_rows,
)
from ipr_lightning.models import (
    POLICY,
    add_reference_adapter,
    causal_lm_parts,
    load_model,
    reference_context,
)

PHASES = ("sft", "preference")


class PhaseSchedule:
    """LR multiplier for step `s` of the current phase: linear warm-up, then cosine or flat.

    An object (not a closure) so LambdaLR saves and restores its fields with the checkpoint.
    """

    def __init__(self, warmup_ratio: float, kind: str) -> None:
        self.warmup_ratio, self.kind = warmup_ratio, kind
        self.start, self.total, self.scale = 0, 0, 1.0

    def begin(
        self,
        global_step: int,
        total_steps: int,
        scale: float = 1.0,
        kind: str | None = None,
        warmup_ratio: float | None = None,
    ) -> None:
        """Start a phase: `scale` multiplies the optimizer's base LR (a phase's own peak LR);
        `kind` / `warmup_ratio` replace the schedule's shape when given."""
        self.start, self.total, self.scale = global_step, max(1, total_steps), scale
        self.kind = kind or self.kind
        self.warmup_ratio = self.warmup_ratio if warmup_ratio is None else warmup_ratio

    def __call__(self, global_step: int) -> float:
        step = global_step - self.start
        warmup = math.ceil(self.warmup_ratio * self.total)
        if step < warmup:
            return self.scale * (step + 1) / (warmup + 1)
        if self.kind == "constant":
            return self.scale
        progress = min(1.0, (step - warmup) / max(1, self.total - warmup))
        return self.scale * 0.5 * (1.0 + math.cos(math.pi * progress))


class IPRModule(L.LightningModule):
    def __init__(
        self,
        model_cfg: ModelConfig,
        optim_cfg: OptimConfig,
        loss_cfg: LossConfig,
        reference_adapter: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            {"model": asdict(model_cfg), "optim": asdict(optim_cfg), "loss": asdict(loss_cfg)}
        )
        self.model_cfg, self.optim_cfg, self.loss_cfg = model_cfg, optim_cfg, loss_cfg
        self.reference_adapter = reference_adapter
        """None: reference = base model with adapters disabled; else a frozen adapter's name."""
        self.model: torch.nn.Module | None = None
        self.phase = "sft"
        self.schedule = PhaseSchedule(optim_cfg.warmup_ratio, optim_cfg.schedule)
        self.val_loss = MeanMetric()
        # The base model is not in our checkpoints; it is rebuilt by configure_model.
        self.strict_loading = False

    def configure_model(self) -> None:
        if self.model is None:  # Lightning calls this at every stage: keep it idempotent
            self.model = load_model(self.model_cfg)
            # from_pretrained returns eval mode; Lightning keeps per-module modes, so without
            # this LoRA dropout would be silently off during training.
            self.model.train()

    def begin_phase(
        self,
        kind: str,
        total_steps: int,
        lr: float | None = None,
        schedule: str | None = None,
        warmup_ratio: float | None = None,
    ) -> None:
        """Switch objective and restart the LR schedule over this phase's optimizer steps
        (peak `lr`, default `optim.lr`; `schedule`/`warmup_ratio` default to the optim's)."""
        if kind not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {kind!r}")
        self.phase = kind
        scale = 1.0 if lr is None else lr / self.optim_cfg.lr
        self.schedule.begin(
            self.global_step,
            total_steps,
            scale,
            schedule or self.optim_cfg.schedule,
            self.optim_cfg.warmup_ratio if warmup_ratio is None else warmup_ratio,
        )
        if self._trainer is not None:  # the first step of the phase must already use its LR
            for cfg in self.trainer.lr_scheduler_configs:
                sched = cfg.scheduler
                for group, base in zip(sched.optimizer.param_groups, sched.base_lrs, strict=True):
                    group["lr"] = base * self.schedule(self.global_step)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Full logits [B, T, V] (for inspection; training uses `token_logps`)."""
        assert self.model is not None, "configure_model() has not run"
        return self.model(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).logits

    def token_logps(self, batch: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        """log p of every trained token: (values [N], row index [N], counts per row [B]).

        The LM head runs on the N trained positions only, never on all B*T: on CPU this
        halves a SmolLM2 step, on GPU it removes the [B, T, V] logits from memory.
        """
        parts = causal_lm_parts(self.model)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        if parts is None:
            x, head = self(ids, mask), None
        else:
            backbone, head = parts
            x = backbone(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        rows, targets, row_index, counts = select_label_rows(x, batch["labels"])
        return label_logps(rows if head is None else head(rows), targets), row_index, counts

    def sequence_logps(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token-summed log-prob per row [B] and trained tokens per row [B]."""
        values, row_index, counts = self.token_logps(batch)
        return per_sequence(values, row_index, counts), counts

    # --- steps -----------------------------------------------------------------------------

    def _sft_loss(self, batch: dict[str, Any], prefix: str) -> torch.Tensor:
        values, _, _ = self.token_logps(batch)
        loss = nll_from_logps(values)
        tokens = values.numel()
        if prefix == "train":
            self.log("train/loss", loss, prog_bar=True)
            self.log("train/loss_nll", loss)
            self.log("train/tokens", float(tokens), reduce_fx="sum")
        else:
            self.val_loss.update(loss.detach(), weight=tokens)
        return loss

    def _reference_logps(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        if "ref_chosen_logps" in batch:
            return batch["ref_chosen_logps"], batch["ref_rejected_logps"]
        with torch.no_grad(), reference_context(self.model, self.reference_adapter):
            ref, _ = self.sequence_logps(batch)
        return ref.chunk(2)

    def _preference_loss(self, batch: dict[str, Any], prefix: str) -> torch.Tensor:
        logps, counts = self.sequence_logps(batch)
        chosen, rejected = logps.chunk(2)
        ref_chosen, ref_rejected = self._reference_logps(batch)
        n_pairs = chosen.shape[0]
        chosen_tokens = counts[:n_pairs]
        c = self.loss_cfg
        out = ipr_objective(
            chosen,
            rejected,
            ref_chosen,
            ref_rejected,
            batch["is_step"],
            beta=c.beta,
            label_smoothing=c.label_smoothing,
            w_sft=c.w_sft,
            w_outcome=c.w_outcome,
            w_step=c.w_step,
            chosen_token_counts=chosen_tokens,
            nll_on=c.nll_on,
            nll_reduction=c.nll_reduction,
        )
        margins = out.chosen_rewards - out.rejected_rewards
        metrics = {
            f"{prefix}/loss": out.loss,
            f"{prefix}/loss_nll": out.nll,
            f"{prefix}/loss_outcome_dpo": out.outcome_dpo,
            f"{prefix}/loss_step_dpo": out.step_dpo,
            "rewards/chosen": out.chosen_rewards.mean(),
            "rewards/rejected": out.rejected_rewards.mean(),
            "rewards/accuracies": (margins > 0).float().mean(),
            "rewards/margins": margins.mean(),
            "logps/chosen": chosen.detach().mean(),
            "logps/rejected": rejected.detach().mean(),
        }
        if prefix != "train":  # TRL's names, kept distinct for validation
            metrics = {
                k if k.startswith(prefix) else f"{prefix}/{k}": v for k, v in metrics.items()
            }
        # `train/loss` is shown in the progress bar in every phase (Lightning requires one
        # set of logging arguments per key across the whole fit).
        self.log(f"{prefix}/loss", metrics.pop(f"{prefix}/loss"), prog_bar=True, batch_size=n_pairs)
        self.log_dict(metrics, prog_bar=False, batch_size=n_pairs)
        self.log(
            f"{prefix}/step_pair_fraction", batch["is_step"].float().mean(), batch_size=n_pairs
        )
        return out.loss

    def _loss(self, batch: dict[str, Any], prefix: str) -> torch.Tensor:
        if "is_step" in batch:
            return self._preference_loss(batch, prefix)
        return self._sft_loss(batch, prefix)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._loss(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._loss(batch, "val")

    def on_validation_epoch_end(self) -> None:
        if self.val_loss.update_count:
            self.log("val/loss", self.val_loss.compute(), prog_bar=True)
        self.val_loss.reset()

    # --- optimisation ----------------------------------------------------------------------

    def on_train_start(self) -> None:
        if self.schedule.total == 0:  # a fresh run (a resumed one restored its schedule)
            self.begin_phase(self.phase, self._phase_steps())

    def _phase_steps(self) -> int:
        trainer = self.trainer
        per_epoch = math.ceil(len(trainer.train_dataloader) / trainer.accumulate_grad_batches)
        total = per_epoch * max(1, trainer.max_epochs or 1)
        return min(total, trainer.max_steps) if trainer.max_steps > 0 else total

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise RuntimeError("no trainable parameters: is the model fully frozen?")
        opt = torch.optim.AdamW(
            params, lr=self.optim_cfg.lr, weight_decay=self.optim_cfg.weight_decay
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self.schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # --- checkpoints -----------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep = {n for n, p in self.named_parameters() if p.requires_grad or "lora_" in n}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        adapters = sorted(set(getattr(self.model, "peft_config", {})) - {POLICY})
        checkpoint["ipr_phase"] = {
            "phase": self.phase,
            "reference_adapter": self.reference_adapter,
            "frozen_adapters": adapters,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("ipr_phase", {})
        self.phase = state.get("phase", self.phase)
        self.reference_adapter = state.get("reference_adapter", self.reference_adapter)
        # Frozen adapters (the SFT copy, ...) must exist before their weights are loaded.
        for name in state.get("frozen_adapters", []):
            if self.model is not None and name not in self.model.peft_config:
                add_reference_adapter(self.model, POLICY, name)
