"""Expert records become IPR tasks only when they start as the env starts a conversation:
the in-context example is inserted where the file lacks it, anything else is one clear line;
one task per task id; a record without a reward gets the reward of its replay."""

from dataclasses import replace

import pytest

from ipr_lightning.config import EnvConfig
from ipr_lightning.data.io import DataFileError
from ipr_lightning.data.records import Turn
from ipr_lightning.envs import build_env
from ipr_lightning.ipr.experts import align_experts, expert_tasks


@pytest.fixture(scope="module")
def paper_shaped():
    """Toy expert records without an in-context example (the paper's data shape), and the
    handle of a run with `env.in_context_example=true`."""
    plain = build_env(EnvConfig(options={"n_train": 3}), "train")
    with_example = build_env(EnvConfig(in_context_example=True, options={"n_train": 3}), "train")
    return plain.expert(), with_example


def test_missing_in_context_example_is_inserted_not_taken_for_actions(paper_shaped):
    records, handle = paper_shaped
    example = handle.example_for(records[0].id)
    tasks = expert_tasks(handle, records, "sft.json")
    for record, task in zip(records, tasks, strict=True):
        actions = [t.content for t in record.turns if t.role == "assistant"][1:]  # after OK
        assert task.actions == actions  # not the example's actions (7 became 1 before)
        assert task.start[2 : 2 + len(example)] == example
        assert task.start == handle.build_start(handle.make_env(), record.turns[2].content)
    aligned, _ = align_experts(handle, records, "sft.json")
    assert all(a.turns[2 : 2 + len(example)] == example for a in aligned)  # SFT sees it too
    # records that already hold the example are taken as they are
    again = expert_tasks(handle, handle.expert(), "sft.json")
    assert [t.dialogue for t in again] == [t.dialogue for t in tasks]


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda turns: [Turn("system", "You are an agent."), *turns], "system turn"),
        (lambda turns: turns[:3], "and an action"),
        (lambda turns: [turns[0], *turns[2:]], "must start with the instruction"),
        (lambda turns: turns[:4] + turns[5:], "alternate"),
    ],
)
def test_records_that_do_not_fit_the_env_prompt_are_one_line_errors(paper_shaped, edit, needle):
    records, handle = paper_shaped
    bad = [records[0], replace(records[1], turns=edit(records[1].turns))]
    with pytest.raises(DataFileError, match=needle) as info:
        expert_tasks(handle, bad, "sft.json")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"sft.json: record 1 (id={records[1].id!r}): field 'conversations'")


def test_unknown_task_names_the_record(paper_shaped):
    records, handle = paper_shaped
    with pytest.raises(DataFileError, match="record 0 .*not a task of the toy train split"):
        expert_tasks(handle, [replace(records[0], id="nope")], "sft.json")


def test_duplicate_records_of_a_task_explore_it_once(paper_shaped, caplog):
    records, handle = paper_shaped
    shorter = replace(records[0], turns=records[0].turns[:-2])  # a second, different demo
    with caplog.at_level("WARNING"):
        tasks = expert_tasks(handle, [*records, shorter], "sft.json")
    assert [t.task_id for t in tasks] == [r.id for r in records]  # first record wins
    assert "1 records repeat a task" in caplog.text


def test_record_without_reward_gets_its_replayed_reward(paper_shaped):
    records, handle = paper_shaped
    whole = replace(records[0], reward=None)
    unfinished = replace(records[1], reward=None, turns=records[1].turns[:-2])
    tasks = expert_tasks(handle, [whole, unfinished, records[2]], "sft.json")
    assert [t.reward for t in tasks] == [1.0, 0.0, 1.0]  # not 1.0 for the unfinished one
