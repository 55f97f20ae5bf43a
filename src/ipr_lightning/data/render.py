"""Render conversations to token ids with assistant-only labels, and collate batches.

The tokenizer's chat template renders the whole conversation once; character spans of the
trained assistant turns are found by rendering growing prefixes (the template must be
prefix-stable), and a token is trained iff it starts inside such a span. Everything else —
system, instruction, observations, the assistant header — gets label -100. The span of an
assistant turn is its content plus the end-of-turn token right after it, so the model learns
to stop.

Tokenizers without a chat template get `FALLBACK_CHAT_TEMPLATE` (set by
`ensure_chat_template`), so training, generation and evaluation share one rendering path.

Too-long rows: a conversation is cut on the right (`render_conversation`); a preference pair
first loses whole (action, observation) history turns of its prompt, oldest first, so that
its completions stay trained (`render_pair`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from ipr_lightning.data.records import Dialogue, PreferencePair, Turn, history_turn_pairs

IGNORE_INDEX = -100

FALLBACK_CHAT_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


class TemplateError(ValueError):
    """The chat template cannot be used for assistant-only masking."""


@dataclass
class Rendered:
    input_ids: list[int]
    labels: list[int]
    truncated: bool
    """True when the conversation was longer than `max_length` and was cut."""

    @property
    def num_trained(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def ensure_chat_template(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give a tokenizer without a chat template the plain fallback template."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return tokenizer


def _messages(turns: Sequence[Turn]) -> list[dict[str, str]]:
    return [{"role": t.role, "content": t.content} for t in turns]


def _template(tokenizer: PreTrainedTokenizerBase, turns: Sequence[Turn], gen: bool) -> str:
    return tokenizer.apply_chat_template(
        _messages(turns), tokenize=False, add_generation_prompt=gen
    )


def render_text(
    tokenizer: PreTrainedTokenizerBase, turns: Sequence[Turn], add_generation_prompt: bool = False
) -> str:
    """The exact text the model sees; generation prompts use `add_generation_prompt=True`."""
    return _template(tokenizer, turns, add_generation_prompt)


def assistant_spans(
    tokenizer: PreTrainedTokenizerBase, turns: Sequence[Turn], train_from: int = 0
) -> tuple[str, list[tuple[int, int]]]:
    """Full text and the (start, end) character spans of assistant turns at index >= train_from."""
    text = _template(tokenizer, turns, False)
    special = sorted(tokenizer.all_special_tokens, key=len, reverse=True)
    spans = []
    for i, turn in enumerate(turns):
        if turn.role != "assistant" or i < train_from:
            continue
        before = _template(tokenizer, turns[:i], True)
        upto = _template(tokenizer, turns[: i + 1], False)
        if not (text.startswith(before) and text.startswith(upto) and upto.startswith(before)):
            raise TemplateError(
                "the tokenizer's chat template is not prefix-stable (rendering more turns "
                "changes earlier text), so assistant tokens cannot be located"
            )
        start = upto.find(turn.content, len(before))
        if start < 0:
            raise TemplateError(f"assistant turn {i} does not appear verbatim in the template")
        end = start + len(turn.content)
        # Train the end-of-turn marker too (e.g. <|im_end|>, </s>): it is how generation stops.
        end += next((len(s) for s in special if upto.startswith(s, end)), 0)
        spans.append((start, end))
    return text, spans


@dataclass
class _Encoded:
    """A whole conversation as tokens: ids, labels and each token's first character."""

    input_ids: list[int]
    labels: list[int]
    starts: list[int]

    def cut(self, max_length: int) -> Rendered:
        n = max_length
        return Rendered(self.input_ids[:n], self.labels[:n], len(self.input_ids) > n)


def _encode(tokenizer: PreTrainedTokenizerBase, turns: Sequence[Turn], train_from: int) -> _Encoded:
    text, spans = assistant_spans(tokenizer, turns, train_from)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = [IGNORE_INDEX] * len(ids)
    span_iter = iter(spans)
    span = next(span_iter, None)
    for k, (start, _end) in enumerate(offsets):
        while span is not None and start >= span[1]:
            span = next(span_iter, None)
        if span is not None and span[0] <= start < span[1]:
            labels[k] = ids[k]
    return _Encoded(ids, labels, [start for start, _ in offsets])


def render_conversation(
    tokenizer: PreTrainedTokenizerBase, turns: Sequence[Turn], max_length: int, train_from: int = 0
) -> Rendered:
    """Token ids and labels for one conversation; only assistant turns >= train_from train.

    A conversation longer than `max_length` tokens is cut on the right (`truncated`)."""
    return _encode(tokenizer, turns, train_from).cut(max_length)


@dataclass
class FittedPair:
    """The two rows of a preference pair after fitting them into `max_length`."""

    chosen: Rendered
    rejected: Rendered
    dropped_turns: int
    """History turns dropped from the prompt (two per action/observation), same on both rows."""

    @property
    def too_long(self) -> bool:
        """A side did not fit in full: history was dropped or a row was cut on the right."""
        return self.dropped_turns > 0 or self.chosen.truncated or self.rejected.truncated


def drop_history(prompt: Sequence[Turn], prompt_start: int | None, pairs: int) -> list[Turn]:
    """The prompt without its `pairs` oldest (assistant, user) history pairs."""
    if not pairs:
        return list(prompt)
    assert prompt_start is not None
    return Dialogue.of(list(prompt), prompt_start).without_oldest(pairs).turns


def render_pair(
    tokenizer: PreTrainedTokenizerBase, pair: PreferencePair, max_length: int
) -> FittedPair:
    """prompt + chosen and prompt + rejected rows, only the completions trained.

    When either row is longer than `max_length`, whole (action, observation) history pairs
    after `pair.prompt_start` are dropped, oldest first, the same number on both sides (they
    keep one prompt) and as few as needed for both to fit. The number is estimated from the
    token counts of the full row and checked by rendering again. Only when no history is left
    to drop (or `prompt_start` is None) are rows cut on the right.
    """
    try:
        history = history_turn_pairs(pair.prompt, pair.prompt_start)
    except ValueError as exc:
        raise ValueError(f"pair {pair.id!r}: prompt_start: {exc}") from None
    bounds = None
    drop = 0
    while True:
        prompt = drop_history(pair.prompt, pair.prompt_start, drop)
        rows = [
            _encode(tokenizer, prompt + side, len(prompt)) for side in (pair.chosen, pair.rejected)
        ]
        excess = max(len(r.input_ids) for r in rows) - max_length
        if excess <= 0 or drop == history:
            return FittedPair(rows[0].cut(max_length), rows[1].cut(max_length), 2 * drop)
        if bounds is None:  # drop == 0: rows are the full rows
            bounds = _HistoryBounds(tokenizer, pair.prompt, pair.prompt_start, rows[0].starts)
        more = drop + 1
        while more < history and bounds[more] - bounds[drop] < excess:
            more += 1
        drop = more


class _HistoryBounds:
    """`bounds[i]`: index of the first token of history pair i in a full row (i = number of
    pairs: the first completion token). Rendered on demand, oldest first, so dropping a few
    pairs renders only a few short prompt prefixes."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompt: Sequence[Turn],
        prompt_start: int | None,
        starts: list[int],
    ) -> None:
        assert prompt_start is not None
        self.tokenizer, self.dialogue = tokenizer, Dialogue.of(list(prompt), prompt_start)
        self.starts = starts
        self.known: list[int] = []

    def __getitem__(self, i: int) -> int:
        while len(self.known) <= i:
            before = self.dialogue.prefix(len(self.known))
            chars = len(_template(self.tokenizer, before, False)) if before else 0
            self.known.append(bisect_left(self.starts, chars))
        return self.known[i]


def pad_batch(rows: Sequence[Rendered], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad rendered rows to the longest: input_ids, attention_mask, labels ([B, T])."""
    width = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r.input_ids)
        ids[i, :n] = torch.tensor(r.input_ids)
        labels[i, :n] = torch.tensor(r.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
