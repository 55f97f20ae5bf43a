"""IPRModule: the LightningModule that trains SFT, then the IPR preference objective.

Phase `sft` minimises the assistant-only NLL. Phase `preference` runs the policy on chosen
and rejected sequences in one forward and minimises
`w_sft·NLL + w_outcome·DPO(outcome pairs) + w_step·DPO(step pairs)`; reference log-probs come
precomputed in the batch or are computed without grad from the reference (adapters disabled,
or a frozen named adapter such as the SFT copy).

The learning-rate schedule belongs to the phase: `begin_phase(kind, total_steps)` restarts
warm-up and decay over that phase's own step count (never `estimated_stepping_batches`,
which is sized from the first phase's data, nor `trainer.max_epochs`, which counts every
phase). SFT spans `sft_epochs` and stops at `sft_max_steps`; a preference phase may start with
a fresh optimizer state and with dropout off. Checkpoints hold adapter and optimizer state,
not the (possibly 4-bit) base model.

Frozen policies (the SFT scorer/reference, ETO's previous policy) are LoRA adapter copies
beside the trained one; with full fine-tuning they are frozen copies of the whole model
(`freeze_policy`), which the checkpoint does not hold: the caller saves and reloads them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import peft
import torch
from lightning.pytorch.strategies import FSDPStrategy
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
    frozen_copy,
    load_frozen_copy,
    load_model,
    reference_context,
)

PHASES = ("sft", "preference")


def shared_prefix_supported(model_cfg: ModelConfig) -> bool:
    """Whether pairs can be packed with a block mask: SDPA, eager and hub kernels that take a
    4-D mask; not flash attention (no custom mask) nor flex attention (a BlockMask)."""
    attn = model_cfg.attn_implementation or "sdpa"
    return "flash_attention" not in attn and "flex_attention" not in attn


def attention_mask_for(model: torch.nn.Module, allowed: torch.Tensor) -> torch.Tensor:
    """A custom [B, 1, T, T] mask (True: may attend) as the model's attention kernel takes it:
    boolean for SDPA, additive (0 / most negative) for eager and the others."""
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", "sdpa") == "sdpa":
        return allowed
    blocked = torch.finfo(torch.float32).min
    return torch.zeros(allowed.shape, device=allowed.device).masked_fill(~allowed, blocked)


def causal_mask_or_none(mask: torch.Tensor) -> torch.Tensor | None:
    """None when every row is right-padded (its ones, then its zeros): under causal attention
    no real token sees a pad to its right, so the padding mask changes none of their outputs,
    and without it the attention kernel takes its causal path (no [B, 1, T, T] mask built;
    about 12 % of a step of a small model on a CPU). Otherwise the mask itself."""
    if mask.shape[1] < 2 or bool((mask[:, 1:] <= mask[:, :-1]).all()):
        return None
    return mask


class NonFiniteTraining(RuntimeError):
    """The loss or the trained weights stopped being finite: the run stops, exporting nothing."""


def check_finite_weights(module: torch.nn.Module, when: str) -> None:
    """Refuse to keep weights that are NaN/inf (they would be saved and served silently)."""
    bad = [n for n, p in module.named_parameters() if p.requires_grad and not p.isfinite().all()]
    if bad:
        raise NonFiniteTraining(
            f"training diverged: {len(bad)} trained tensors hold NaN/inf {when} (first: "
            f"{bad[0]}); nothing is saved. Lower the learning rate (optim.lr / ipr.lr)"
        )


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
        sft_epochs: int | None = None,
        sft_max_steps: int = -1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            {"model": asdict(model_cfg), "optim": asdict(optim_cfg), "loss": asdict(loss_cfg)}
        )
        self.model_cfg, self.optim_cfg, self.loss_cfg = model_cfg, optim_cfg, loss_cfg
        self.reference_adapter = reference_adapter
        """None: reference = base model with adapters disabled; else a frozen adapter's name."""
        self.sft_epochs, self.sft_max_steps = sft_epochs, sft_max_steps
        """SFT's epochs (None: trainer.max_epochs) and optimizer-step cap (<= 0: none)."""
        self.model: torch.nn.Module | None = None
        self.frozen: dict[str, torch.nn.Module] = {}
        """Full fine-tuning: frozen copies of the policy by name (a plain dict: they are not
        submodules, so neither the optimizer nor the checkpoint sees them)."""
        self.missing_frozen: list[str] = []
        """Frozen copies a restored checkpoint refers to that are not loaded yet."""
        self.dropout_off = False
        self.phase = "sft"
        self.schedule = PhaseSchedule(optim_cfg.warmup_ratio, optim_cfg.schedule)
        self.val_loss = MeanMetric()
        # The base model is not in our checkpoints; it is rebuilt by configure_model.
        self.strict_loading = False

    def configure_model(self) -> None:
        if self.model is None:  # Lightning calls this at every stage: keep it idempotent
            strategy = self._trainer.strategy if self._trainer is not None else None
            self.model = load_model(self.model_cfg, isinstance(strategy, FSDPStrategy))
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
        fresh_optimizer: bool = False,
        disable_dropout: bool = False,
    ) -> None:
        """Switch objective and restart the LR schedule over this phase's optimizer steps
        (peak `lr`, default `optim.lr`; `schedule`/`warmup_ratio` default to the optim's);
        optionally drop the optimizer's moments and turn dropout off for good."""
        if kind not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {kind!r}")
        self.phase = kind
        if disable_dropout:
            self.dropout_off = True
            self._apply_dropout_off()
        if fresh_optimizer and self._trainer is not None:
            for optimizer in self.trainer.optimizers:
                optimizer.state.clear()
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

    def token_logps(
        self, batch: dict[str, Any], model: torch.nn.Module | None = None
    ) -> tuple[torch.Tensor, ...]:
        """log p of every trained token: (values [N], row index [N], counts per row [B]),
        under `model` (default: the policy).

        The LM head runs on the N trained positions only, never on all B*T: on CPU this
        halves a SmolLM2 step, on GPU it removes the [B, T, V] logits from memory.
        """
        model = self.model if model is None else model
        parts = causal_lm_parts(model)
        ids = batch["input_ids"]
        if "pair_mask" in batch:  # one packed row per pair (`SharedPrefixCollator`)
            mask = attention_mask_for(model, batch["pair_mask"])
            extra = {"position_ids": batch["position_ids"]}
        else:
            mask, extra = causal_mask_or_none(batch["attention_mask"]), {}
        if parts is None:
            x = model(input_ids=ids, attention_mask=mask, use_cache=False, **extra).logits
            head = None
        else:
            backbone, head = parts
            x = backbone(input_ids=ids, attention_mask=mask, use_cache=False, **extra)
            x = x.last_hidden_state
        if "pair_mask" in batch:
            rows, targets = x.flatten(0, 1)[batch["pred_rows"]], batch["targets"]
            row_index, counts = batch["row_index"], batch["counts"]
        else:
            rows, targets, row_index, counts = select_label_rows(x, batch["labels"])
        return label_logps(rows if head is None else head(rows), targets), row_index, counts

    def sequence_logps(
        self, batch: dict[str, Any], model: torch.nn.Module | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token-summed log-prob per row [B] and trained tokens per row [B]."""
        values, row_index, counts = self.token_logps(batch, model)
        return per_sequence(values, row_index, counts), counts

    # --- frozen policies (scorer, reference) ------------------------------------------------

    def freeze_policy(self, name: str) -> None:
        """Keep the current policy, frozen, under `name`: a LoRA adapter copy, or with full
        fine-tuning a copy of the whole model (refused with a clear error if it can't fit)."""
        if isinstance(self.model, peft.PeftModel):
            add_reference_adapter(self.model, POLICY, name)
        else:
            self.frozen.pop(name, None)  # a refresh (ETO's previous policy): free the old one
            self.frozen[name] = frozen_copy(self.model)

    def load_frozen(self, name: str, path: str | Path) -> None:
        """Load a full-fine-tuning frozen copy saved at `path` (after a resume)."""
        self.frozen[name] = load_frozen_copy(path, self.model)
        if name in self.missing_frozen:
            self.missing_frozen.remove(name)

    def has_frozen(self, name: str) -> bool:
        if isinstance(self.model, peft.PeftModel):
            return name in self.model.peft_config
        return name in self.frozen

    def acting(self, name: str) -> tuple[torch.nn.Module, str | None]:
        """(model, adapter) that acts as policy `name` (POLICY: the trained one)."""
        if name in self.frozen:
            return self.frozen[name], None
        return self.model, name

    @contextmanager
    def reference(self) -> Iterator[torch.nn.Module]:
        """The DPO reference to compute with, in eval mode: a frozen copy (full fine-tuning),
        else the model with the reference adapter (or with adapters disabled)."""
        name = self.reference_adapter
        if name is not None and name in self.frozen:
            yield self.frozen[name]
        else:
            with reference_context(self.model, name):
                yield self.model

    def _apply_dropout_off(self) -> None:
        for module in self.model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0

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
        with torch.no_grad(), self.reference() as model:
            ref, _ = self.sequence_logps(batch, model)
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

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        if self.phase == "sft" and 0 < self.sft_max_steps <= self.global_step:
            return -1  # SFT's step cap reached: skip the rest of its epochs
        return None

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if batch.get("no_pairs"):  # an iteration without pairs: nothing to train on
            return None
        loss = self._loss(batch, "train")
        if not torch.isfinite(loss):
            raise NonFiniteTraining(
                f"training diverged: the {self.phase} loss at step {self.global_step} is "
                f"{loss.item()}; nothing is exported and checkpoints/last.ckpt keeps an "
                "earlier step. Lower the learning rate (optim.lr / ipr.lr), or check the "
                "pairs' reference log-probs"
            )
        return loss

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
        """Optimizer steps of the SFT phase: its own epochs, capped by its step limit."""
        trainer = self.trainer
        per_epoch = math.ceil(len(trainer.train_dataloader) / trainer.accumulate_grad_batches)
        total = per_epoch * max(1, self.sft_epochs or trainer.max_epochs or 1)
        cap = self.sft_max_steps if self.sft_max_steps > 0 else trainer.max_steps
        return min(total, cap) if cap > 0 else total

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
            "frozen_models": sorted(self.frozen),
            "dropout_off": self.dropout_off,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("ipr_phase", {})
        self.phase = state.get("phase", self.phase)
        self.reference_adapter = state.get("reference_adapter", self.reference_adapter)
        # Frozen adapters (the SFT copy, ...) must exist before their weights are loaded.
        for name in state.get("frozen_adapters", []):
            if self.model is not None and name not in self.model.peft_config:
                add_reference_adapter(self.model, POLICY, name)
        self.missing_frozen = [n for n in state.get("frozen_models", []) if n not in self.frozen]
        if state.get("dropout_off") and self.model is not None:
            self.dropout_off = True
            self._apply_dropout_off()
