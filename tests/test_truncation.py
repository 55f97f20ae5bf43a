"""Too-long preference pairs: old prompt history goes first, completions stay trained, and a
pair left with nothing to train on is not served."""

import logging

import pytest

from ipr_lightning.data.datasets import PairDataset
from ipr_lightning.data.records import PreferencePair, Turn
from ipr_lightning.data.render import IGNORE_INDEX, ensure_chat_template, render_conversation
from ipr_lightning.ipr.pairs import PairRules, Side, outcome_pair, step_pair
from ipr_lightning.models import build_tiny_tokenizer

START = [
    Turn("user", "You are in a house. Answer as Thought/Action."),
    Turn("assistant", "OK"),
    Turn("user", "Your task is to: put a mug on shelf 1."),
]
HISTORY = [
    turn
    for i in range(8)
    for turn in (
        Turn("assistant", f"Action: go to drawer {i}"),
        Turn("user", f"Observation: drawer {i} is closed (obs-{i})."),
    )
]
CHOSEN = [
    Turn("assistant", "Thought: the mug may be in cabinet 1.\nAction: go to cabinet 1"),
    Turn("user", "Observation: On the cabinet 1, you see a mug 1."),
    Turn("assistant", "Action: take mug 1 from cabinet 1"),
]
REJECTED = [Turn("assistant", "Action: look")]


@pytest.fixture(scope="module")
def tok():
    return ensure_chat_template(build_tiny_tokenizer())


def step(pid="s", prompt_start=3, prompt=None, chosen=CHOSEN, rejected=REJECTED):
    prompt = START + HISTORY if prompt is None else prompt
    return PreferencePair(
        pid, prompt, chosen, rejected, pair_type="step", prompt_start=prompt_start
    )


def longest(tok, prompt, sides=(CHOSEN, REJECTED)) -> int:
    """Tokens of the longer of prompt + chosen and prompt + rejected, uncut."""
    return max(
        len(render_conversation(tok, prompt + s, 10**6, len(prompt)).input_ids) for s in sides
    )


def trained(row) -> list[int]:
    return [label for label in row.labels if label != IGNORE_INDEX]


def prompt_ids(row) -> list[int]:
    """The tokens before the first trained one."""
    return row.input_ids[: next(i for i, lab in enumerate(row.labels) if lab != IGNORE_INDEX)]


def test_long_history_loses_its_oldest_turns_and_keeps_the_completion_trained(tok):
    # Room for the history minus its 3 oldest (action, observation) pairs, not for 2.
    kept = START + HISTORY[6:]
    max_length = longest(tok, kept)
    assert longest(tok, START + HISTORY[4:]) > max_length
    ds = PairDataset([step()], tok, max_length)
    full = PairDataset([step()], tok, 10**6)[0]
    row = ds[0]
    for side, whole in ((row.chosen, full.chosen), (row.rejected, full.rejected)):
        assert not side.truncated and len(side.input_ids) <= max_length
        assert trained(side) == trained(whole)  # the whole completion, every token
    text = tok.decode(row.chosen.input_ids)
    assert START[0].content in text and START[2].content in text
    assert [f"obs-{i}" in text for i in range(8)] == [False] * 3 + [True] * 5
    # Both sides see one prompt: the conversation start and the newest history, re-rendered.
    assert prompt_ids(row.chosen) == prompt_ids(row.rejected)
    assert (
        tok.decode(prompt_ids(row.chosen))
        == tok.decode(render_conversation(tok, kept, 10**6).input_ids) + "<|assistant|>\n"
    )
    stats = ds.stats
    assert (stats.pairs, stats.served, stats.too_long) == (1, 1, 1)
    assert (stats.history_shortened, stats.history_turns_dropped) == (1, 6)
    assert (stats.cut_right, stats.dropped_untrained) == (0, 0)


def test_pairs_with_nothing_left_to_train_are_dropped_and_counted(tok, caplog):
    long_start = [Turn("user", "Instruction. " * 40), *START[1:]]
    long_completion = [CHOSEN[0], Turn("user", "Observation: " + "a mug " * 60), CHOSEN[2]]
    max_length = longest(tok, START, (CHOSEN[:1], REJECTED)) + 5
    assert longest(tok, START, (long_completion,)) > max_length
    pairs = [
        step("fits", prompt=START, chosen=CHOSEN[:1]),
        step("hopeless", prompt=long_start + HISTORY),  # even the instruction does not fit
        step("no_start", prompt_start=None),  # history cannot be dropped: cut on the right
        step("long", chosen=long_completion),  # all history dropped, then cut; 1st action kept
    ]
    with caplog.at_level(logging.WARNING):
        ds = PairDataset(pairs, tok, max_length)
    stats = ds.stats
    assert (stats.pairs, stats.served, stats.too_long) == (4, 2, 3)
    assert (stats.history_shortened, stats.history_turns_dropped) == (2, 32)
    assert (stats.cut_right, stats.dropped_untrained) == (3, 2)
    assert len(ds) == 2
    for row in ds.rows:
        assert trained(row.chosen) and trained(row.rejected)
        assert len(row.chosen.input_ids) <= max_length
    assert stats.trained_tokens == sum(
        len(trained(r.chosen)) + len(trained(r.rejected)) for r in ds.rows
    )
    long = ds[1]
    assert long.chosen.truncated and not long.rejected.truncated
    assert tok.decode(trained(long.chosen)).startswith(CHOSEN[0].content)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "3 of 4 pairs exceed max_length" in warning and "2 dropped" in warning


def test_short_pairs_are_untouched_and_bad_prompt_start_is_refused(tok):
    row = PairDataset([step()], tok, 10**6)[0]
    plain = PairDataset([step(prompt_start=None)], tok, 10**6)[0]
    assert row == plain
    with pytest.raises(ValueError, match=r"pair 's': prompt_start: .* prompt turn 4 is a user"):
        PairDataset([step(prompt_start=4)], tok, 10**6)


def test_pair_builders_store_prompt_start():
    expert, agent = Side(CHOSEN, 1.0, 1.0), Side(REJECTED, 0.0, 0.0)
    prompt = START + HISTORY[:2]
    rules = PairRules(tau_step=0.1)
    assert step_pair("t", 1, prompt, expert, agent, rules, 1, prompt_start=3).prompt_start == 3
    assert outcome_pair("t", START, expert, agent, rules, 1, prompt_start=3).prompt_start == 3
    assert outcome_pair("t", START, expert, agent, rules, 1).prompt_start is None
