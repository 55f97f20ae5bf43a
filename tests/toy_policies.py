"""Scripted policies for the toy household (shared by the rollout and IPR tests)."""

import random
import re

from ipr_lightning.envs.base import parse_react
from ipr_lightning.envs.toy.env import RECEPTACLES
from ipr_lightning.rollout.policy import Generation, Policy


def toy_oracle(history) -> str:
    """Acts from observations only: search receptacles in order, open closed ones, take the
    target when seen, carry it to the goal, open that if closed, put it there."""
    obj, goal = re.search(r"put an? (\w+) (?:in|on) (.+)\.$", history[2].content).groups()
    actions = [parse_react(t.content).action for t in history[3:] if t.role == "assistant"]
    last_action, last_obs = (actions[-1] if actions else ""), history[-1].content
    at = next(
        (last_action[len(verb) :] for verb in ("go to ", "open ") if last_action.startswith(verb)),
        None,
    )
    holding = any(a.startswith("take") for a in actions)
    if "is closed" in last_obs:
        step = f"open {at}"
    elif holding and at == goal:
        step = f"put {obj} 1 in/on {goal}"
    elif holding:
        step = f"go to {goal}"
    elif f"{obj} 1" in last_obs and at:
        step = f"take {obj} 1 from {at}"
    else:
        visited = {a[6:] for a in actions if a.startswith("go to ")}
        step = "go to " + next(r for r in RECEPTACLES if r not in visited)
    return f"Thought: next step.\nAction: {step}"


class TossPolicy(Policy):
    """The oracle that sometimes wastes a turn on `look`: sampled rows (given seeds) toss a
    coin seeded by the row's seed, so what a row does depends on its seed only; greedy rows
    look on every third turn."""

    def act(self, histories, sampling, seeds=None):
        out = []
        for i, h in enumerate(histories):
            if seeds is None:
                lose = sum(t.role == "assistant" for t in h) % 3 == 2
            else:
                lose = random.Random(seeds[i]).random() < 0.4
            text = "Thought: hm.\nAction: look" if lose else toy_oracle(h)
            out.append(Generation(text, 3))
        return out
