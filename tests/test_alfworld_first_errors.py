"""benchmarks/alfworld_first_errors.py: the kind of a failed episode's first rejected action."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "alfworld_first_errors.py"
spec = importlib.util.spec_from_file_location("alfworld_first_errors", SCRIPT)
first_errors = importlib.util.module_from_spec(spec)
spec.loader.exec_module(first_errors)

ROOM = "You are in the middle of a room. Looking quickly around you, you see a cabinet 2, a \
desk 1, and a shelf 1.\nYour task is to: put some pen on desk."


def episode(*steps: tuple[str, str]) -> list[dict]:
    turns = [{"from": "human", "value": "instruction"}, {"from": "gpt", "value": "OK"}]
    turns.append({"from": "human", "value": ROOM})
    for said, seen in steps:
        turns += [{"from": "gpt", "value": said}, {"from": "human", "value": seen}]
    return turns


def test_the_room_is_read_from_the_first_observation():
    assert first_errors.room_receptacles(ROOM) == {"cabinet 2", "desk 1", "shelf 1"}


def test_the_first_rejected_action_is_classified():
    ok = ("Thought: t\nAction: go to shelf 1", "You arrive at shelf 1.")
    nothing = "Nothing happens."
    cases = {
        "go to a receptacle the room lacks": [ok, ("Action: go to sidetable 1", nothing)],
        "go to where it already is": [ok, ("Action: go to shelf 1", nothing)],
        "take an object that is not there": [("Action: take pen 1 from shelf 1", nothing)],
        "no action in the output": [ok, ("Thought: hmm", nothing)],
        "other rejected verb: open": [("Action: open shelf 1", nothing)],
        "failed without a rejected action": [ok, ok],
    }
    later = ("Action: take cd 1 from desk 1", nothing)
    for kind, steps in cases.items():
        assert first_errors.first_error(episode(*steps)) == kind
        if kind != "failed without a rejected action":  # a later rejection changes nothing
            assert first_errors.first_error(episode(*steps, later)) == kind
