"""benchmarks/alfworld_reading_probe.py: reading decisions and their counterfactual lists."""

import importlib.util
import sys
from pathlib import Path

from ipr_lightning.data.records import Trajectory, Turn

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "alfworld_reading_probe.py"
spec = importlib.util.spec_from_file_location("alfworld_reading_probe", SCRIPT)
probe = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = probe  # its dataclass looks its module up there
spec.loader.exec_module(probe)

ROOM = "You are in the middle of a room. Looking quickly around you, you see a desk 1, a \
drawer 1, and a shelf 1.\nYour task is to: put some pen on desk."


def expert() -> Trajectory:
    steps = [
        ("go to shelf 1", "You arrive at shelf 1. On the shelf 1, you see a cd 1, and a mug 2."),
        ("go to drawer 1", "You arrive at drawer 1. The drawer 1 is closed."),
        ("open drawer 1", "You open the drawer 1. The drawer 1 is open. In it, you see nothing."),
        ("close drawer 1", "You close the drawer 1."),
        ("go to desk 1", "You arrive at desk 1. On the desk 1, you see a pen 2, and a cd 2."),
        ("take pen 2 from desk 1", "You pick up the pen 2 from the desk 1."),
        ("put pen 2 in/on desk 1", "You put the pen 2 in/on the desk 1."),
    ]
    turns = [Turn("user", "instruction"), Turn("assistant", "OK"), Turn("user", ROOM)]
    for action, seen in steps:
        turns += [Turn("assistant", f"Thought: t.\nAction: {action}"), Turn("user", seen)]
    return Trajectory("game", turns[:-1], 1.0, {})


def test_lists_are_parsed_and_rewritten_as_alfworld_writes_them():
    obs = "You arrive at desk 1. On the desk 1, you see a pen 2, a cd 2, and a mug 1."
    assert probe.listed(obs) == ["pen 2", "cd 2", "mug 1"]
    assert probe.with_items(obs, probe.listed(obs)) == obs
    assert probe.with_items(obs, ["cd 2"]).endswith("you see a cd 2.")
    assert probe.with_items(obs, ["cd 2", "mug 1"]).endswith("you see a cd 2, and a mug 1.")
    assert probe.with_items(obs, []).endswith("you see nothing.")
    assert probe.listed("In it, you see nothing.") == [] == probe.listed("You close it.")


def test_decisions_stop_at_the_take_and_change_only_the_list():
    cases = probe.decisions(expert())
    assert [c.present for c in cases] == [False, False, True]
    for case in cases:  # the history ends on the observation; only that turn is changed
        assert case.history[-1].role == "user" and case.changed[:-1] == case.history[:-1]
    assert cases[0].changed[-1].content.endswith("you see a pen 2, a cd 1, and a mug 2.")
    assert cases[1].changed[-1].content.endswith("In it, you see a pen 2.")
    assert cases[2].changed[-1].content.endswith("On the desk 1, you see a cd 2.")


def test_a_reader_flips_every_answer_and_a_non_reader_none():
    cases = probe.decisions(expert())

    def reader(histories):
        return [
            "take pen 2 from x" if " pen 2" in h[-1].content else "go to shelf 1" for h in histories
        ]

    assert probe.tally(cases, reader) == {"present": [1, 1, 1], "absent": [2, 0, 2]}
    assert probe.tally(cases, lambda hs: ["go to desk 1"] * len(hs)) == {
        "present": [1, 0, 0],
        "absent": [2, 0, 0],
    }
