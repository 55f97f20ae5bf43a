"""Policies: "given K chat histories and sampling settings, return K assistant outputs".

One interface for every consumer (evaluation, exploration, MC scoring, scripted tests).
`HFPolicy` renders each history with the tokenizer's chat template (the same rendering as
training) and decodes all of a call's histories together (in chunks of `batch_size`),
reusing the keys/values of earlier calls for the part of each history it has seen before
(`rollout.kv`; `reuse_kv=False`: one plain HF `generate` per chunk). A named LoRA adapter is
selected for the call, so explorer and scorer share one base model.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)

from ipr_lightning.data.records import Turn
from ipr_lightning.data.render import render_text
from ipr_lightning.envs.base import ACTION_LINE_RE
from ipr_lightning.models import inference_context
from ipr_lightning.rollout.kv import PrefixCache, generate, supports

log = logging.getLogger("ipr_lightning")
# Agents must stop before inventing the environment's answer.
STOP_MARKERS = ("\nObservation:", "\nObservation :")


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0
    """0 = greedy."""
    top_p: float = 1.0
    max_new_tokens: int = 128
    seed: int | None = None
    """Seeds the rows of this call that get no seed of their own; None = torch's global RNG."""
    action_end: re.Pattern[str] | None = ACTION_LINE_RE
    """Stop a row once this matches its text, and cut the text after the match: the env
    reads nothing after a complete action, so tokens after it would be wasted. The env
    handle says what a complete action is (one line; a closed SQL code block); None: stop
    only at EOS, an invented `Observation:` or `max_new_tokens`."""


@dataclass(frozen=True)
class Generation:
    text: str
    tokens: int
    """Generated tokens (before cutting at a stop marker)."""


class Policy:
    def act(
        self,
        histories: Sequence[Sequence[Turn]],
        sampling: Sampling,
        seeds: Sequence[int] | None = None,
    ) -> list[Generation]:
        """One output per history. `seeds` (one per history) make sampled rows reproducible
        whatever else shares the batch."""
        raise NotImplementedError


class ScriptedPolicy(Policy):
    """A policy from a function of the history (tests, oracles, random baselines)."""

    def __init__(self, fn: Callable[[Sequence[Turn]], str]) -> None:
        self.fn = fn
        self.calls: list[int] = []
        """Batch size of each `act` call (lets tests check that episodes are batched)."""

    def act(
        self,
        histories: Sequence[Sequence[Turn]],
        sampling: Sampling,
        seeds: Sequence[int] | None = None,
    ) -> list[Generation]:
        self.calls.append(len(histories))
        outs = [self.fn(h) for h in histories]
        return [Generation(o, len(o.split())) for o in outs]


def cut_at_stop(text: str, action_end: re.Pattern[str] | None = None) -> str:
    """Drop anything from an invented `Observation:` on (and, if given, after the first
    complete action), and surrounding whitespace."""
    for marker in STOP_MARKERS:
        text = text.split(marker, 1)[0]
    if action_end is not None and (m := action_end.search(text)):
        text = text[: m.end()]
    return text.strip()


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, histories: Sequence[Sequence[Turn]]
) -> list[list[int]]:
    """Token ids of each history rendered for generation (the training rendering)."""
    prompts = [render_text(tokenizer, h, add_generation_prompt=True) for h in histories]
    return tokenizer(prompts, add_special_tokens=False)["input_ids"]


def row_seeds(sampling: Sampling, n: int) -> list[int]:
    """Seeds of `n` rows given none of their own: from `sampling.seed`, else random."""
    if sampling.seed is not None:
        return [sampling.seed * 1_000_003 + i for i in range(n)]
    return torch.randint(0, 2**62, (n,)).tolist()


class ActionEndStop(StoppingCriteria):
    """Per row: done once the generated text holds a complete action."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, prompt_length: int, action_end: re.Pattern[str]
    ) -> None:
        self.tokenizer, self.prompt_length, self.action_end = tokenizer, prompt_length, action_end

    def __call__(
        self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object
    ) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(
            input_ids[:, self.prompt_length :], skip_special_tokens=True
        )
        done = [self.action_end.search(t) is not None for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class RowSampler(LogitsProcessor):
    """Sampling at temperature T as argmax(logits / T + Gumbel noise), with one random
    generator per row: a row's tokens depend only on its own seed, never on which other rows
    share the batch (so resumed or re-batched MC rollouts reproduce exactly). Used with
    greedy decoding, whose argmax then draws from softmax(logits / T) (restricted to the top-p
    nucleus when top_p < 1)."""

    def __init__(
        self, seeds: Sequence[int], temperature: float, top_p: float, device: torch.device
    ) -> None:
        self.temperature, self.top_p = temperature, top_p
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return self.perturb(scores, range(len(self.generators)))

    def perturb(self, scores: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
        """Scores of the listed rows (indices into the seeds) made ready for argmax."""
        scores = scores.float() / self.temperature
        if self.top_p < 1.0:
            ordered, idx = scores.sort(dim=-1, descending=True)
            outside = ordered.softmax(-1).cumsum(-1) - ordered.softmax(-1) >= self.top_p
            scores = scores.masked_fill(outside.scatter(-1, idx, outside), float("-inf"))
        uniform = torch.stack(
            [
                torch.rand(scores.shape[-1], generator=self.generators[r], device=scores.device)
                for r in rows
            ]
        ).clamp_(1e-10, 1.0 - 1e-7)
        return scores - torch.log(-torch.log(uniform))


def _free_accelerator_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class HFPolicy(Policy):
    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        adapter: str | None = None,
        batch_size: int = 16,
        reuse_kv: bool = True,
        kv_cache_gb: float = 2.0,
    ) -> None:
        """`adapter`: the LoRA adapter to act with (None: the model as it is; for a peft model
        that means its active adapter). `reuse_kv`: keep up to `kv_cache_gb` of keys/values
        between calls (models with sliding-window layers use plain HF `generate`); they are
        only valid for the weights that computed them, so make a new policy (or
        `cache.clear()`) after the weights change."""
        self.model, self.tokenizer = model, tokenizer
        self.adapter, self.batch_size = adapter, batch_size
        self.cache = None
        if reuse_kv and supports(model):
            self.cache = PrefixCache(int(kv_cache_gb * 2**30))

    def act(
        self,
        histories: Sequence[Sequence[Turn]],
        sampling: Sampling,
        seeds: Sequence[int] | None = None,
    ) -> list[Generation]:
        ids = encode_prompts(self.tokenizer, histories)
        seeds = row_seeds(sampling, len(ids)) if seeds is None else seeds
        # Similar lengths share a chunk: less padding, same results (rows are independent).
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        results: list[Generation | None] = [None] * len(ids)
        run = self._generate if self.cache is None else self._decode
        pending = [order[s : s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        with inference_context(self.model, self.adapter):  # eval mode, modes restored after
            while pending:
                chunk = pending.pop(0)
                try:
                    gens = run([ids[i] for i in chunk], sampling, [seeds[i] for i in chunk])
                except torch.OutOfMemoryError:
                    pending[:0] = self._shrink(chunk)
                    continue
                for i, gen in zip(chunk, gens, strict=True):
                    results[i] = gen
        return [r for r in results if r is not None]

    def _shrink(self, chunk: list[int]) -> list[list[int]]:
        """After running out of memory on `chunk`: halve the batch size for the rest of the
        run and split the chunk; at one row, give back the prefix cache once first. Rows are
        independent and seeded, so the outputs are the same as without the retry."""
        _free_accelerator_memory()
        if len(chunk) > 1:
            half = len(chunk) // 2
            log.warning(
                "out of memory generating %d rows: batch size %d -> %d",
                len(chunk),
                self.batch_size,
                half,
            )
            self.batch_size = min(self.batch_size, half)
            return [chunk[:half], chunk[half:]]
        if self.cache is not None and len(self.cache):
            log.warning("out of memory generating one row: dropping the key/value cache")
            self.cache.clear()
            _free_accelerator_memory()
            return [chunk]
        raise torch.OutOfMemoryError(
            "out of memory generating a single row with an empty key/value cache: the model "
            "and one episode do not fit (shorten max_new_tokens or the prompt, or quantise)"
        )

    def _decode(
        self, ids: list[list[int]], sampling: Sampling, seeds: list[int]
    ) -> list[Generation]:
        tok = self.tokenizer
        device = next(self.model.parameters()).device
        sampler = None
        if sampling.temperature > 0:
            sampler = RowSampler(seeds, sampling.temperature, sampling.top_p, device)

        def pick(logits: torch.Tensor, rows: list[int]) -> torch.Tensor:
            return (logits if sampler is None else sampler.perturb(logits, rows)).argmax(-1)

        def stop(row: int, generated: list[int]) -> bool:
            text = tok.decode(generated, skip_special_tokens=True)
            return any(m in text for m in STOP_MARKERS) or bool(
                sampling.action_end and sampling.action_end.search(text)
            )

        model = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        eos = tok.eos_token_id
        decoded = generate(
            model,
            ids,
            self.cache,
            max_new_tokens=sampling.max_new_tokens,
            pad_id=tok.pad_token_id,
            eos_ids=set(eos if isinstance(eos, list) else [eos]),
            pick=pick,
            stop=stop,
        )
        return [
            Generation(
                cut_at_stop(tok.decode(d.tokens, skip_special_tokens=True), sampling.action_end),
                len(d.tokens) - d.eos,
            )
            for d in decoded
        ]

    def _generate(
        self, ids: list[list[int]], sampling: Sampling, seeds: list[int]
    ) -> list[Generation]:
        tok = self.tokenizer
        device = next(self.model.parameters()).device
        width = max(map(len, ids))  # generation appends on the right: pad on the left
        enc = {
            "input_ids": torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in ids]),
            "attention_mask": torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in ids]),
        }
        enc = {k: v.to(device) for k, v in enc.items()}
        stops = StoppingCriteriaList()
        if sampling.action_end is not None:
            stops.append(ActionEndStop(tok, enc["input_ids"].shape[1], sampling.action_end))
        processors = LogitsProcessorList()
        if sampling.temperature > 0:  # sampled through per-row generators, decoded greedily
            processors.append(RowSampler(seeds, sampling.temperature, sampling.top_p, device))
        out = self.model.generate(
            **enc,
            max_new_tokens=sampling.max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            logits_processor=processors,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            stop_strings=list(STOP_MARKERS),
            tokenizer=tok,
            stopping_criteria=stops,
        )
        new = out[:, enc["input_ids"].shape[1] :]
        gens = []
        for row in new:
            n = int((row != tok.pad_token_id).sum())
            text = tok.decode(row, skip_special_tokens=True)
            gens.append(Generation(cut_at_stop(text, sampling.action_end), n))
        return gens
