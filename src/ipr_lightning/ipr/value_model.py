"""The learned step-value model of `ipr.step_values=model|mixed` (IPR paper § 5.5).

The policy's base model with its own LoRA adapter, `value`, and a linear regression head on
the last token's final hidden state: (conversation up to and including an action) -> its
step value, a sigmoid in [0, 1], trained with MSE on the MC-labelled actions of earlier
iterations (`values.LabelSet`). With LoRA the `value` adapter sits on the policy's own base
(no second copy of a 7B model) and starts as a copy of the frozen SFT adapter; with full
fine-tuning it is LoRA on a copy of the frozen SFT model.

It is built anew from the SFT policy at every iteration and trained on that iteration's
labels, under its own seeded random state: the same labels give the same model, so it needs
no checkpoint (a resumed iteration rebuilds it) and training it does not disturb the
policy's random state. `close()` removes the adapter again.

Plain torch; no Lightning.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import peft
import torch
from tqdm.auto import tqdm

from ipr_lightning.config import LoraConfig
from ipr_lightning.data.records import Turn
from ipr_lightning.data.render import render_text
from ipr_lightning.ipr.pairs import PairRules
from ipr_lightning.ipr.values import (
    Item,
    ValueExample,
    comparisons,
    held_out,
    held_out_metrics,
)
from ipr_lightning.models import (
    add_reference_adapter,
    build_lora_config,
    causal_lm_parts,
    frozen_copy,
    reference_context,
)

VALUE = "value"


def _rng_devices(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []


class StepValueModel:
    def __init__(
        self,
        model: peft.PeftModel,
        tokenizer: Any,
        max_length: int,
        owns_model: bool,
        forward_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ) -> None:
        """Use `build`."""
        self.model, self.tokenizer, self.max_length = model, tokenizer, max_length
        self.owns_model, self.forward_context = owns_model, forward_context
        self.device = next(model.parameters()).device
        hidden = model.get_base_model().config.hidden_size
        self.head = torch.nn.Linear(hidden, 1).to(self.device, torch.float32)

    @classmethod
    def build(
        cls,
        policy: torch.nn.Module,
        sft_copy: torch.nn.Module | None,
        lora: LoraConfig,
        tokenizer: Any,
        max_length: int,
        seed: int,
        forward_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
        sft_adapter: str = "sft",
    ) -> StepValueModel:
        """A fresh value model. `policy`: the trained model (a peft model with the frozen
        SFT adapter `sft_adapter`, or a plain model under full fine-tuning); `sft_copy`: the
        frozen SFT model of full fine-tuning (None with LoRA)."""
        device = next(policy.parameters()).device
        with torch.random.fork_rng(devices=_rng_devices(device)):
            torch.manual_seed(seed)
            if isinstance(policy, peft.PeftModel):
                add_reference_adapter(policy, sft_adapter, VALUE)
                model, owns = policy, False
            else:
                if sft_copy is None:
                    raise ValueError("full fine-tuning: the value model needs the SFT copy")
                config = build_lora_config(lora)
                model = peft.get_peft_model(frozen_copy(sft_copy), config, adapter_name=VALUE)
                owns = True
            return cls(model, tokenizer, max_length, owns, forward_context)

    def close(self) -> None:
        """Remove the `value` adapter from a shared model (LoRA); drop an owned copy."""
        if not self.owns_model and VALUE in self.model.peft_config:
            self.model.delete_adapter(VALUE)
        self.model = None

    # --- computing --------------------------------------------------------------------------

    def _encode(self, item: Item) -> list[int]:
        """The conversation through the action, its last `max_length` tokens (the action and
        the most recent context)."""
        prompt, action = item
        text = render_text(self.tokenizer, [*prompt, Turn("assistant", action)])
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids[-self.max_length :]

    def _logits(self, rows: Sequence[list[int]]) -> torch.Tensor:
        """The head's logit for each row [B]: the final hidden state of its last token."""
        width = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        with self.forward_context():
            parts = causal_lm_parts(self.model)
            if parts is not None:
                hidden = parts[0](input_ids=ids, attention_mask=mask).last_hidden_state
            else:
                out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
                hidden = out.hidden_states[-1]
        last = hidden[torch.arange(len(rows), device=self.device), mask.sum(1) - 1]
        return self.head(last.float()).squeeze(-1)

    @staticmethod
    def _batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
        """Indices grouped by length (little padding), in length order."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

    def predict(self, items: Sequence[Item], batch_size: int = 8) -> list[float]:
        """Step values in [0, 1], in the order of `items`."""
        if not items:
            return []
        rows = [self._encode(item) for item in items]
        out = [0.0] * len(rows)
        with reference_context(self.model, VALUE), torch.no_grad():
            for batch in self._batches([len(r) for r in rows], batch_size):
                values = torch.sigmoid(self._logits([rows[i] for i in batch])).tolist()
                for i, v in zip(batch, values, strict=True):
                    out[i] = v
        return out

    def fit(
        self,
        examples: Sequence[ValueExample],
        epochs: int,
        lr: float,
        batch_size: int,
        seed: int,
        progress: bool = True,
    ) -> dict[str, float]:
        """MSE of sigmoid(head) on the examples' values, `epochs` passes in shuffled batches;
        the head starts at the examples' mean value (a constant predictor). Returns the last
        epoch's mean loss, the number of examples and the seconds it took."""
        start = time.perf_counter()
        if not examples:
            raise ValueError("the value model needs labelled actions to train on")
        rows = [self._encode((e.prompt, e.action)) for e in examples]
        targets = torch.tensor([e.value for e in examples], dtype=torch.float32)
        mean = min(max(float(targets.mean()), 1e-3), 1 - 1e-3)
        batches = self._batches([len(r) for r in rows], batch_size)
        rng = random.Random(seed)
        last_epoch = []
        with torch.random.fork_rng(devices=_rng_devices(self.device)):
            torch.manual_seed(seed)
            with torch.no_grad():
                self.head.weight.zero_()
                self.head.bias.fill_(math.log(mean / (1 - mean)))
            with reference_context(self.model, VALUE), torch.enable_grad():
                params = [p for n, p in self.model.named_parameters() if f".{VALUE}." in n]
                for p in params:  # the context restores every flag on exit
                    p.requires_grad_(True)
                params += list(self.head.parameters())
                optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
                bar = tqdm(total=epochs * len(batches), desc="value model", disable=not progress)
                for _ in range(epochs):
                    rng.shuffle(batches)
                    last_epoch = []
                    for batch in batches:
                        pred = torch.sigmoid(self._logits([rows[i] for i in batch]))
                        loss = torch.nn.functional.mse_loss(pred, targets[batch].to(self.device))
                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        optimizer.step()
                        last_epoch.append(loss.item() * len(batch))
                        bar.update()
                bar.close()
                for p in params:
                    p.grad = None
        return {
            "train_examples": len(examples),
            "train_mse": sum(last_epoch) / len(examples),
            "fit_seconds": round(time.perf_counter() - start, 2),
        }


def split_labels(examples: Sequence[ValueExample]) -> tuple[list, list]:
    """(training, held-out) examples: held-out tasks (`values.held_out`) never train."""
    return [e for e in examples if not held_out(e.task)], [e for e in examples if held_out(e.task)]


def fit_and_check(
    model: StepValueModel,
    examples: Sequence[ValueExample],
    rewards: dict[tuple[int, str, int], tuple[float, float]],
    rules: PairRules,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    progress: bool = True,
) -> dict[str, float]:
    """Train `model` on the examples of the training tasks and measure it on the held-out
    ones (`held_out_metrics`; `rewards` as for `values.comparisons`): `values/*` stats."""
    train, test = split_labels(examples)
    fit = model.fit(train, epochs, lr, batch_size, seed, progress)
    stats = {f"values/{name}": value for name, value in fit.items()}
    predictions = model.predict([(e.prompt, e.action) for e in test], batch_size)
    baseline = sum(e.value for e in train) / len(train)
    pairs = comparisons(test, rewards)
    stats.update(held_out_metrics(test, predictions, baseline, pairs, rules))
    return stats
