"""Does an ALFWorld policy read its observations? A teacher-forced, counterfactual probe.

On the expert trajectories of a split, every expert turn that follows an observation listing
what a receptacle holds ("..., you see a apple 1, and a mug 2.") is a *reading decision*:
the expert takes the object it looks for when the list has it ("present") and moves on when
it does not ("absent"). The probe gives the policy the expert's history up to that
observation, generates its turn greedily, and counts how often it takes (`take ...`). It then
asks the same question with the list changed and nothing else: the sought object removed
from a present list, added to an absent one. A policy that reads takes in the first case and
not in the second; one that does not read answers the same either way.

Printed per kind: decisions, how often the policy took, and how often its answer followed the
changed list ("flips"). Accuracy on the real lists alone can look good without any reading
when most lists lack the object; the flips cannot.

    python benchmarks/alfworld_reading_probe.py --run bench/alfworld_cpu/seed_0/sft
    python benchmarks/alfworld_reading_probe.py --run <run> --split train --limit 100

Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ipr_lightning.data.records import Trajectory, Turn
from ipr_lightning.envs.base import parse_react

SEE = "you see "


@dataclass(frozen=True)
class Decision:
    """One reading decision: the history before the expert's turn (ending on the
    observation), the same history with the list changed, and whether the sought object is
    really listed."""

    history: list[Turn]
    changed: list[Turn]
    present: bool


def listed(observation: str) -> list[str]:
    """The items after "you see" ("a apple 1, and a mug 2." -> ["apple 1", "mug 2"])."""
    if SEE not in observation:
        return []
    text = observation.split(SEE, 1)[1].strip().rstrip(".")
    if text == "nothing":
        return []
    items = [p.strip().removeprefix("and ").strip() for p in text.split(", ")]
    return [i.split(" ", 1)[1] for i in items if i.startswith(("a ", "an "))]


def with_items(observation: str, items: Sequence[str]) -> str:
    """`observation` with its list replaced by `items`, written as ALFWorld writes lists."""
    head = observation.split(SEE, 1)[0] + SEE
    words = [f"a {i}" for i in items]
    if not words:
        return head + "nothing."
    if len(words) == 1:
        return f"{head}{words[0]}."
    return f"{head}{', '.join(words[:-1])}, and {words[-1]}."


def decisions(trajectory: Trajectory) -> list[Decision]:
    """The reading decisions of one expert trajectory, up to its first `take` of the object
    it was looking for (later lists are read for other things)."""
    turns = trajectory.turns
    takes = [parse_react(t.content).action for t in turns if t.role == "assistant"]
    first_take = next((a for a in takes if a and a.startswith("take ")), None)
    if first_take is None:
        return []
    item = re.match(r"take (.+?) from ", first_take)
    if item is None:
        return []
    sought, kind = item[1], item[1].split()[0]
    found = []
    for i, turn in enumerate(turns):
        if turn.role != "assistant" or i == 0 or turns[i - 1].role != "user":
            continue
        obs, action = turns[i - 1].content, parse_react(turn.content).action or ""
        if SEE not in obs or obs.startswith("You are in the middle"):
            continue
        items = listed(obs)
        present = any(x.split()[0] == kind for x in items)
        if present:
            changed = with_items(obs, [x for x in items if x.split()[0] != kind])
        else:
            changed = with_items(obs, [sought, *items])
        history = list(turns[:i])
        found.append(Decision(history, [*history[:-1], Turn("user", changed)], present))
        if action.startswith("take "):
            break
    return found


def tally(
    cases: Sequence[Decision], act: Callable[[list[list[Turn]]], list[str]]
) -> dict[str, list[int]]:
    """{"present"/"absent": [decisions, took on the real list, answers that flipped]};
    `act` answers a batch of histories (one action each)."""
    answers = act([c.history for c in cases] + [c.changed for c in cases])
    out = {"present": [0, 0, 0], "absent": [0, 0, 0]}
    n = len(cases)
    for case, real, changed in zip(cases, answers[:n], answers[n:], strict=True):
        took = real.startswith("take ")
        row = out["present" if case.present else "absent"]
        row[0] += 1
        row[1] += took
        row[2] += took != changed.startswith("take ")
    return out


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from ipr_lightning.config import load_config
    from ipr_lightning.data.render import ensure_chat_template, render_text
    from ipr_lightning.envs import build_env
    from ipr_lightning.models import load_tokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="an ipr-fit run folder (config + adapter)")
    parser.add_argument("--split", default="valid_unseen")
    parser.add_argument("--limit", type=int, default=60, help="expert trajectories probed")
    parser.add_argument("--batch-size", type=int, default=16, help="histories per generate call")
    args = parser.parse_args()
    run = Path(args.run)
    cfg = load_config(run / "config.yaml")
    tok = ensure_chat_template(load_tokenizer(cfg.model))
    model = AutoModelForCausalLM.from_pretrained(run / "adapter").eval()  # full fine-tuning

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device)
    tok.padding_side = "left"  # batched greedy generation continues every row at its end

    def act(histories: list[list[Turn]]) -> list[str]:
        actions = []
        for i in range(0, len(histories), args.batch_size):
            texts = [render_text(tok, h, True) for h in histories[i : i + args.batch_size]]
            ids = tok(texts, add_special_tokens=False, return_tensors="pt", padding=True)
            with torch.no_grad():
                out = model.generate(
                    **ids.to(device),
                    max_new_tokens=64,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id,
                )
            for row in out[:, ids["input_ids"].shape[1] :]:
                text = tok.decode(row, skip_special_tokens=True)
                actions.append(parse_react(text).action or "")
        return actions

    experts = build_env(cfg.env, args.split).expert()[: args.limit]
    cases = [d for traj in experts for d in decisions(traj)]
    counts = tally(cases, act)
    print(f"{args.split}: {len(experts)} expert trajectories, {len(cases)} reading decisions")
    for kind, (n, took, flips) in counts.items():
        want = "takes" if kind == "present" else "moves on"
        right = took if kind == "present" else n - took
        print(
            f"  {kind:8} {n:4}  the policy {want}: {right}/{n} = {right / max(n, 1):.3f}"
            f"   answer follows the changed list: {flips}/{n} = {flips / max(n, 1):.3f}"
        )


if __name__ == "__main__":
    main()
