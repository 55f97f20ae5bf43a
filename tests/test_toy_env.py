"""The toy household env and the shipped demo trajectories it generates."""

import json

import pytest

from ipr_lightning.data.io import read_trajectories, turns_to_json
from ipr_lightning.envs.toy.env import ToyEnv, demo_trajectories, make_task
from ipr_lightning.lightning.datamodule import resolve_data_file


def actions_of(traj):
    return [t.content for t in traj.turns[3:] if t.role == "assistant"]


def test_shipped_demo_file_is_what_the_generator_writes():
    shipped = read_trajectories(resolve_data_file("embedded:demo"))
    fresh = demo_trajectories()
    assert [turns_to_json(t.turns) for t in shipped] == [turns_to_json(t.turns) for t in fresh]
    assert [t.id for t in shipped] == [t.id for t in fresh]


def test_every_demo_trajectory_replays_to_success_in_the_env():
    shipped = read_trajectories(resolve_data_file("embedded:demo"))
    env = ToyEnv({make_task(i).id: make_task(i) for i in range(len(shipped))})
    for traj in shipped:
        obs, _ = env.reset(options={"task_id": traj.id})
        assert obs == traj.turns[2].content
        actions = actions_of(traj)
        for k, action in enumerate(actions):
            obs, reward, terminated, truncated, _ = env.step(action)
            if k < len(actions) - 1:
                assert not terminated and traj.turns[4 + 2 * k].content == f"Observation: {obs}"
        assert terminated and reward == 1.0 and not truncated


def test_invalid_actions_and_step_limit():
    task = make_task(3)
    env = ToyEnv({task.id: task}, max_turns=3)
    env.reset(options={"task_id": task.id})
    obs, _, _, _, info = env.step("Action: fly to the moon")
    assert obs == "Nothing happens." and info["invalid"] and not info["malformed"]
    obs, _, _, _, info = env.step("I think I should take the mug")  # no Action: at all
    assert obs == "Nothing happens." and info["invalid"] and info["malformed"]
    obs, reward, terminated, truncated, _ = env.step("Thought: hm.\nAction: inventory")
    assert obs == "You are not carrying anything."
    assert (reward, terminated, truncated) == (0.0, False, True)
    with pytest.raises(KeyError, match="unknown toy task"):
        env.reset(options={"task_id": "nope"})


def test_tasks_are_deterministic_and_varied():
    assert make_task(5, seed=1) == make_task(5, seed=1)
    tasks = [make_task(i) for i in range(64)]
    assert len({(t.target_object, t.target_recep) for t in tasks}) > 20
    inside_closed = [
        any(f"{t.target_object} 1" in objs and r in t.closed for r, objs in t.contents.items())
        for t in tasks
    ]
    assert any(inside_closed) and not all(inside_closed)
    # The demo file is the paper's ShareGPT shape.
    raw = json.loads(resolve_data_file("embedded:demo").read_text())
    assert set(raw[0]) == {"id", "env", "reward", "conversations"}
    assert raw[0]["conversations"][1] == {"from": "gpt", "value": "OK"}
