"""Where do an ALFWorld policy's failed episodes go wrong? Its first rejected action, by kind.

Reads evaluation transcripts (`ipr-eval`'s or `ipr-bench`'s `transcripts.jsonl`) and, for
every failed episode, finds the first action the environment rejected (`Nothing happens.`)
and sorts it: a `go to` a receptacle the room does not have (the room is the first
observation's list), a `go to` where the agent already is, a `take` of an object that is not
there, an output with no action, or another verb. Episodes that failed without a rejected
action are counted apart.

    python benchmarks/alfworld_first_errors.py \
        bench/alfworld_cpu/seed_*/sft/eval/after_sft/transcripts.jsonl

Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

REJECTED = "Nothing happens"


def room_receptacles(first_observation: str) -> set[str]:
    """`a cabinet 2, a desk 1, and a shelf 1.` -> {"cabinet 2", "desk 1", "shelf 1"}."""
    room = first_observation.split("you see ", 1)[-1].split("\n")[0].rstrip(".")
    items = room.replace(", and ", ", ").removeprefix("and ").split(", ")
    return {item.strip().split(" ", 1)[-1] for item in items if item.strip()}


def first_error(conversation: list[dict]) -> str:
    """The kind of the first rejected action of one episode (ShareGPT turns)."""
    turns = conversation[2:]  # after the instruction and its "OK"
    room = room_receptacles(turns[0]["value"])
    for k in range(1, len(turns) - 1, 2):
        if REJECTED not in turns[k + 1]["value"]:
            continue
        said = turns[k]["value"]
        action = said.split("Action:", 1)[1].strip() if "Action:" in said else ""
        if not action:
            return "no action in the output"
        verb = action.split()[0]
        if verb == "go":
            where = action.removeprefix("go to ").strip()
            if where not in room:
                return "go to a receptacle the room lacks"
            return "go to where it already is"
        if verb == "take":
            return "take an object that is not there"
        return f"other rejected verb: {verb}"
    return "failed without a rejected action"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("transcripts", nargs="+", type=Path, help="transcripts.jsonl files")
    args = parser.parse_args()
    for path in args.transcripts:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        kinds = Counter(first_error(r["conversations"]) for r in rows if not r["success"])
        failed = sum(kinds.values())
        print(f"{path}: {len(rows)} episodes, {failed} failed")
        for kind, n in kinds.most_common():
            print(f"  {n:4d}  {n / max(failed, 1):6.1%}  {kind}")


if __name__ == "__main__":
    main()
