"""Scripted WebShop-style shoppers: the expert (with rationales), an oracle and a random clicker.

They see only what a model sees — the instruction, the page's text elements and its
clickables (`View`) — so they drive the embedded shop and a real WebShop server alike.

- `ExpertShopper` reads the instruction: searches for its wording, opens the result whose
  title covers most of it within the budget (going back once when the price is over), picks
  the option values the instruction names, buys. Like WebShop's human demonstrations it
  usually, not always, earns 1.0 (a near-miss product, an option it cannot read).
- `OracleShopper` knows the goal (target ASIN and options): it searches for the target's
  title, pages to it, picks the goal's options, buys. An upper bound for the shop.
- `RandomShopper` clicks a random clickable (or searches random words): a lower bound.

    trajectory = play(env, "fixed_0", ExpertShopper())
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ipr_lightning.data.records import Trajectory, Turn
from ipr_lightning.envs.base import OPENING_TURNS, record_episode
from ipr_lightning.envs.webshop.env import BUY_NOW, NEXT_PAGE, PREV_PAGE, TextEnv
from ipr_lightning.envs.webshop.shop import Goal, tokenize

ASIN_RE = re.compile(r"^B[0-9A-Z]{9}$")
BACK_TO_RESULTS = "< Back to Results"
BUDGET_RE = re.compile(r"price lower than (\d+(?:\.\d+)?) dollars")
_RESULTS_HEADER = re.compile(r"^Page \d+ \(")  # "Page 2 (Total results: 50)" and newer forms
_PRICE_CLAUSE = re.compile(r",?\s*(?:and\s+)?price lower than [\d.]+ dollars\.?")
_OPENER = re.compile(
    r"^(?:please\s+)?(?:i\s*(?:'m| am) looking for|i(?:'d| would) like(?: to buy)?|i need|"
    r"i want(?: to buy)?|find me|looking for|can you (?:get|find) me|get me|search for|"
    r"show me|buy me|i'm shopping for|help me find)\s+",
)
STOPWORDS = frozenset(
    "a an the and or for of with in on to that is are it its i me my be can you which "
    "this some any also who want need looking like would find get please size color".split()
)


@dataclass(frozen=True)
class View:
    """What a shopper sees of the current page."""

    instruction: str
    elements: list[str]
    clickables: list[str]


@dataclass(frozen=True)
class Listing:
    asin: str
    title: str
    price: float | None


class ShopperEnv(Protocol):
    """The part of an env the shoppers use (the embedded shop and the server client)."""

    instruction_text: str
    elements: list[str]

    def available_actions(self) -> dict[str, Any]: ...


def shopper_seed(task_id: str) -> int:
    """A shopper's seed for a goal: the same rationales every time it shops for it."""
    return zlib.crc32(task_id.encode())


def view_of(env: ShopperEnv) -> View:
    return View(env.instruction_text, env.elements, env.available_actions()["clickables"])


def budget(instruction: str) -> float | None:
    m = BUDGET_RE.search(instruction)
    return float(m.group(1)) if m else None


def price_of(text: str) -> float | None:
    """The lowest dollar amount in a price tag ("$12.99 to $15.99" -> 12.99)."""
    amounts = [float(a) for a in re.findall(r"\$(\d+(?:\.\d+)?)", text)]
    return min(amounts) if amounts else None


def listings(elements: list[str]) -> list[Listing]:
    """The products of a results page: each ASIN element is followed by title and price."""
    found = []
    for i, text in enumerate(elements[:-2]):
        if ASIN_RE.match(text):
            found.append(Listing(text, elements[i + 1], price_of(elements[i + 2])))
    return found


def item_details(view: View) -> tuple[str, float | None, dict[str, list[str]]]:
    """(title, price, option name -> values) of an item page."""
    at = next(i for i, t in enumerate(view.elements) if t.startswith("Price:"))
    clickable = set(view.clickables)
    groups: dict[str, list[str]] = {}
    name = None
    for text in view.elements[2 : at - 1]:  # after Back to Search, < Prev; before the title
        if text in clickable and name is not None:
            groups[name].append(text)
        else:
            name = text
            groups[name] = []
    return view.elements[at - 1], price_of(view.elements[at]), groups


def page_kind(view: View) -> str:
    clickable = set(view.clickables)
    if "search" in clickable:
        return "search"
    if BUY_NOW.lower() in clickable:
        return "item"
    if any(_RESULTS_HEADER.match(t) for t in view.elements[:3]):
        return "results"
    return "sub" if clickable else "done"


def back_button(view: View) -> str:
    """The one-page-back button: "< Prev" (the templates IPR's data was recorded with), or
    "< Back to Results" on a newer WebShop server's item page."""
    return BACK_TO_RESULTS if BACK_TO_RESULTS.lower() in view.clickables else PREV_PAGE


def search_query(instruction: str) -> str:
    """The instruction's wording without opener and price clause: what the expert types."""
    text = _PRICE_CLAUSE.sub("", instruction.lower()).strip()
    text = _OPENER.sub("", text)
    text = re.sub(r"^(?:a|an|some|the)\s+", "", text)
    return " ".join(re.sub(r"[^\w\s'.&-]", " ", text).split())


def mentioned(values: list[str], instruction: str) -> str | None:
    """The longest option value the instruction names (whole words), if any."""
    text = instruction.lower()
    named = [v for v in values if re.search(rf"(?<![\w-]){re.escape(v)}(?![\w-])", text)]
    return max(named, key=len) if named else None


@dataclass
class ExpertShopper:
    """The scripted expert (see the module docstring); one instance per episode."""

    rng: random.Random = field(default_factory=lambda: random.Random(0))
    tried: list[str] = field(default_factory=list)
    """ASINs opened so far."""
    decided: set[str] = field(default_factory=set)
    """Option names of the current product already dealt with."""
    price_checked: bool = False

    def __call__(self, view: View) -> tuple[str, str]:
        kind = page_kind(view)
        if kind == "search":
            query = search_query(view.instruction)
            return self._say("search", query=query), f"search[{query}]"
        if kind == "results":
            return self._pick(view)
        if kind == "item":
            return self._on_item(view)
        return "I think I should go back to the product page.", f"click[{back_button(view)}]"

    def _say(self, what: str, **kw: Any) -> str:
        return self.rng.choice(THOUGHTS[what]).format(**kw)

    def _pick(self, view: View) -> tuple[str, str]:
        words = [w for w in tokenize(search_query(view.instruction)) if w not in STOPWORDS]
        limit = budget(view.instruction)

        def score(item: Listing) -> float:
            title = set(tokenize(item.title))
            cover = sum(w in title for w in words) / max(len(words), 1)
            affordable = limit is None or item.price is None or item.price <= limit
            return cover + (1.0 if affordable else 0.0)

        fresh = [item for item in listings(view.elements) if item.asin not in self.tried]
        if not fresh:
            return "None of these fit; I should search again.", "click[Back to Search]"
        best = max(fresh, key=score)  # max keeps the first (best ranked) of equal scores
        self.tried.append(best.asin)
        self.decided, self.price_checked = set(), False
        return self._say("product", asin=best.asin, title=best.title), f"click[{best.asin}]"

    def _on_item(self, view: View) -> tuple[str, str]:
        title, price, groups = item_details(view)
        limit = budget(view.instruction)
        over = limit is not None and price is not None and price > limit
        if not self.price_checked and over and len(self.tried) < 2:  # try one more product
            self.price_checked = True
            thought = self._say("over", price=f"{price:.2f}", limit=f"{limit:.2f}")
            return thought, f"click[{back_button(view)}]"
        self.price_checked = True
        for name, values in groups.items():
            if name in self.decided:
                continue
            self.decided.add(name)
            value = mentioned(values, view.instruction)
            if value is not None:
                return self._say("option", name=name, value=value), f"click[{value}]"
        return self._say("buy", title=title), f"click[{BUY_NOW}]"


THOUGHTS = {
    "search": (
        "I think I should search for {query}.",
        "I should start by searching for {query}.",
        "Let me search for {query} first.",
    ),
    "product": (
        "I think I should click on {asin}, '{title}', as it seems to match what I need.",
        "{asin} ('{title}') looks like the best match, so I will open it.",
        "The product {asin}, '{title}', fits the instruction best; I should check it.",
    ),
    "over": (
        "The price is ${price}, above my budget of ${limit}; I should go back and look at "
        "another product.",
    ),
    "option": (
        "I think I should select the {name} '{value}' as the instruction asks.",
        "The instruction asks for {name} '{value}', so I will click it.",
    ),
    "buy": (
        "This product matches my requirements; I should click 'Buy Now'.",
        "I have selected what I need, so I will buy it now.",
        "Everything looks right for '{title}'; I should click on 'Buy Now'.",
    ),
}


@dataclass
class OracleShopper:
    """Knows the goal: finds the target by its title, picks the goal's options, buys."""

    goal: Goal
    pages: int = 0
    searched: int = 0
    chosen: set[str] = field(default_factory=set)

    def __call__(self, view: View) -> tuple[str, str]:
        kind = page_kind(view)
        clickable = set(view.clickables)
        if kind == "search" or (kind == "results" and self.pages >= 5):
            self.searched, self.pages = self.searched + 1, 0
            query = self.goal.name if self.searched == 1 else search_query(self.goal.instruction)
            return "Search for the target.", f"search[{query}]"
        if kind == "results":
            if self.goal.asin.lower() in clickable:
                return "The target is listed.", f"click[{self.goal.asin}]"
            self.pages += 1
            if NEXT_PAGE.lower() in clickable:
                return "Not on this page.", f"click[{NEXT_PAGE}]"
            self.pages = 5
            return "Not found here.", "click[Back to Search]"
        if kind == "item":
            for value in self.goal.options.values():
                if value in clickable and value not in self.chosen:
                    self.chosen.add(value)
                    return "Select the goal option.", f"click[{value}]"
            return "Buy it.", f"click[{BUY_NOW}]"
        return "Back.", f"click[{back_button(view)}]"


@dataclass
class RandomShopper:
    """A uniformly random clicker; on the search page it types 1-3 random words."""

    rng: random.Random
    words: tuple[str, ...] = tuple(
        "bag blue chair cotton dress gift kit lamp large light mini set shoes snack soft "
        "table wireless".split()
    )

    def __call__(self, view: View) -> tuple[str, str]:
        choices = [c for c in view.clickables if c != "search"]
        if "search" in view.clickables or not choices:
            words = self.rng.sample(self.words, self.rng.randint(1, 3))
            return "Random search.", f"search[{' '.join(words)}]"
        return "Random click.", f"click[{self.rng.choice(choices)}]"


Shopper = Callable[[View], tuple[str, str]]


def play(
    env: TextEnv, task_id: str, shopper: Shopper, example: list[Turn] | None = None
) -> Trajectory:
    """One episode of `shopper` in `env`, recorded in the prompt format every stage uses."""

    def next_output(obs: str, info: dict[str, Any]) -> str:
        thought, action = shopper(view_of(env))
        return f"Thought: {thought}\nAction: {action}"

    return record_episode(env, task_id, next_output, example, {"env": "webshop"})


def reward_spread(rewards: list[float]) -> str:
    """ "avg 0.734 | 1.0: 61% | [0.5, 1): 27% | (0, 0.5): 8% | 0: 4%" of a list of rewards."""
    n = max(len(rewards), 1)
    bins = (
        ("1.0", sum(r == 1.0 for r in rewards)),
        ("[0.5, 1)", sum(0.5 <= r < 1.0 for r in rewards)),
        ("(0, 0.5)", sum(0.0 < r < 0.5 for r in rewards)),
        ("0", sum(r <= 0.0 for r in rewards)),
    )
    parts = [f"avg {sum(rewards) / n:.3f}"] + [f"{name}: {100 * k / n:.0f}%" for name, k in bins]
    return " | ".join(parts)


def shopper_stats(make_env: Callable[[], TextEnv], ids: list[str], oracle: bool = True) -> str:
    """One line per shopper: reward spread and average steps over the goals `ids`
    (the oracle needs the embedded shop's goals)."""
    from tqdm.auto import tqdm

    env = make_env()
    shoppers: dict[str, Callable[[str], Shopper]] = {
        "expert": lambda task_id: ExpertShopper(random.Random(shopper_seed(task_id))),
        "random": lambda task_id: RandomShopper(random.Random(shopper_seed(task_id))),
    }
    if oracle:
        shoppers["oracle"] = lambda task_id: OracleShopper(env.goals[task_id])
    lines = []
    for name, make in shoppers.items():
        runs = [play(env, i, make(i)) for i in tqdm(ids, desc=name, leave=False)]
        steps = sum(t.role == "assistant" for r in runs for t in r.turns[OPENING_TURNS:]) / len(
            runs
        )
        lines.append(f"{name:7} {reward_spread([r.reward for r in runs])} | {steps:.1f} steps")
    env.close()
    return "\n".join(lines)
