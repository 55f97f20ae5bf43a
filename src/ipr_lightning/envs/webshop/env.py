"""A WebShop-style shop: WebShop's action space, pages and reward over a generated catalogue.

    env = WebShopEnv(shop, goals)                   # goals: {"fixed_0": Goal, ...}
    obs, info = env.reset(options={"task_id": "fixed_0"})
    # obs = "WebShop [SEP] Instruction: [SEP] i need ... [SEP] Search"
    env.step("Thought: ...\\nAction: search[long clip in hair extension]")
    env.step("Thought: ...\\nAction: click[B09C337K8S]")     # case-insensitive
    env.step("Thought: ...\\nAction: click[Buy Now]")        # ends with WebShop's reward

Pages are lists of text elements shown in WebShop's simple text mode (joined by " [SEP] "):

- search:  WebShop, Instruction:, <instruction>, Search
- results: Back to Search, Page 2 (Total results: 50), < Prev, Next >, then per product its
  ASIN, title and price (10 per page, of the 50 best BM25 matches)
- item:    Back to Search, < Prev, per option its name and values, title, Price: $..,
  Rating: .., Description, Features, Reviews, Buy Now
- Description / Features / Reviews: Back to Search, < Prev, then the text
- done:    Thank you for shopping with us!, Your score (min 0.0, max 1.0), <reward>

As in WebShop's text environment, `search[...]` works from any page, `click[value]` must name
a clickable of the current page (buttons and product ASINs lowercased, option values), and an
invalid action does nothing: the page is shown again (`info["invalid"]`). `click[Buy Now]`
ends the episode; 10 turns without buying are truncated with reward 0.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ipr_lightning.envs.base import TextEnv
from ipr_lightning.envs.webshop.reward import webshop_reward
from ipr_lightning.envs.webshop.shop import PAGE_SIZE, Goal, Product, Shop

# The paper's (IPR's, from ETO) WebShop instruction, word for word.
INSTRUCTION = (
    "You are web shopping.\nI will give you instructions about what to do.\nYou have to follow "
    "the instructions.\nEvery round I will give you an observation and a list of available "
    "actions, you have to respond an action based on the state and instruction.\nYou can use "
    "search action if search is available.\nYou can click one of the buttons in clickables.\n"
    "An action should be of the following structure:\nsearch[keywords]\nclick[value]\nIf the "
    "action is not valid, perform nothing.\nKeywords in search are up to you, but the value in "
    "click must be a value in the list of available actions.\nRemember that your keywords in "
    "search should be carefully designed.\nYour response should use the following format:\n\n"
    "Thought: I think ...\nAction: click[something]"
)
SEP = " [SEP] "
BACK_TO_SEARCH, PREV_PAGE, NEXT_PAGE, BUY_NOW = "Back to Search", "< Prev", "Next >", "Buy Now"
SUB_PAGES = ("Description", "Features", "Reviews")
SCORE_LABEL = "Your score (min 0.0, max 1.0)"
_ACTION = re.compile(r"^\s*(search|click)\s*\[(.*)\]\s*$", re.IGNORECASE | re.DOTALL)


def parse_action(action: str) -> tuple[str, str] | None:
    """("search" | "click", argument) of `search[...]` / `click[...]`, else None."""
    m = _ACTION.match(action)
    if m is None or not m.group(2).strip():
        return None
    return m.group(1).lower(), m.group(2).strip()


@dataclass
class PageState:
    """Where the shopper is: WebShop's session (keywords, page, ASIN, chosen options)."""

    kind: str = "search"
    """search | results | item | Description | Features | Reviews | done"""
    keywords: str = ""
    page: int = 1
    results: list[Product] = field(default_factory=list)
    asin: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    reward: float = 0.0

    @property
    def shown(self) -> list[Product]:
        """The results on the current page."""
        return self.results[(self.page - 1) * PAGE_SIZE : self.page * PAGE_SIZE]

    @property
    def paging(self) -> list[str]:
        """The results page's `< Prev` / `Next >` buttons, when there is a page to go to."""
        return [PREV_PAGE] * (self.page > 1) + [NEXT_PAGE] * (
            self.page * PAGE_SIZE < len(self.results)
        )


def page_elements(state: PageState, shop: Shop, instruction: str) -> list[str]:
    """The text elements of the page, in order (`SEP.join` gives the observation)."""
    if state.kind == "search":
        return ["WebShop", "Instruction:", instruction, "Search"]
    if state.kind == "done":
        return ["Thank you for shopping with us!", SCORE_LABEL, f"{state.reward}"]
    if state.kind == "results":
        header = f"Page {state.page} (Total results: {len(state.results)})"
        elements = [BACK_TO_SEARCH, header, *state.paging]
        for p in state.shown:
            elements += [p.asin, p.name, p.price_tag]
        return elements
    product = shop.by_asin[state.asin]
    elements = [BACK_TO_SEARCH, PREV_PAGE]
    if state.kind == "item":
        for name, values in product.options.items():
            elements += [name, *values]
        return elements + [
            product.name,
            f"Price: {product.price_tag}",
            f"Rating: {product.rating}",
            *SUB_PAGES,
            BUY_NOW,
        ]
    if state.kind == "Description":
        return elements + [product.description]
    if state.kind == "Features":
        return elements + list(product.bullet_points)
    if not product.reviews:
        return elements + ["No reviews found"]
    for review in product.reviews:
        elements += [f'"{review.title}"', str(review.score), review.body]
    return elements


def clickables(state: PageState, shop: Shop) -> dict[str, str]:
    """Clickable value (lowercase, as WebShop lists them) -> what it is: a button's text,
    "product" or the option name of an option value."""
    if state.kind == "search":
        return {"search": "Search"}
    if state.kind == "done":
        return {}
    if state.kind == "results":
        found = {b.lower(): b for b in [BACK_TO_SEARCH, *state.paging]}
        return found | {p.asin.lower(): "product" for p in state.shown}
    buttons = [BACK_TO_SEARCH, PREV_PAGE]
    if state.kind != "item":
        return {b.lower(): b for b in buttons}
    found = {b.lower(): b for b in [*buttons, *SUB_PAGES, BUY_NOW]}
    for name, values in shop.by_asin[state.asin].options.items():
        found |= {v: name for v in values}
    return found


def transition(state: PageState, action: str, shop: Shop) -> PageState | None:
    """The page after `action` (WebShop's text-env rules), or None when it does nothing."""
    parsed = parse_action(action)
    if parsed is None or state.kind == "done":
        return None
    verb, arg = parsed
    if verb == "search":
        keywords = arg.lower()
        return PageState("results", keywords, 1, shop.search(keywords))
    arg = arg.lower()
    what = clickables(state, shop).get(arg)
    if what is None or what == "Search":
        return None
    # Every page keeps the search it came from (keywords, page, results): WebShop's URLs do.
    if what == BACK_TO_SEARCH:
        return PageState()
    if what == NEXT_PAGE:
        return replace(state, page=state.page + 1)
    if what == PREV_PAGE:
        if state.kind == "results":
            return replace(state, page=state.page - 1)
        if state.kind == "item":
            return replace(state, kind="results", asin=None, options={})
        return replace(state, kind="item")  # from a sub page
    if what == "product":
        return replace(state, kind="item", asin=arg.upper(), options={})
    if what in SUB_PAGES:
        return replace(state, kind=what)
    if what == BUY_NOW:
        return PageState("done", asin=state.asin, options=dict(state.options))
    # An option value: select it, stay on the item.
    return replace(state, options={**state.options, what: arg})


class WebShopEnv(TextEnv):
    """The WebShop-style embedded shop (see the module docstring)."""

    instruction = INSTRUCTION
    invalid_observation = (
        "Invalid action: answer with Action: search[keywords] or Action: click[value]."
    )

    def __init__(self, shop: Shop, goals: Mapping[str, Goal], max_turns: int = 10) -> None:
        super().__init__()
        self.shop, self.goals, self.max_turns = shop, goals, max_turns
        self.state = PageState()

    def task_ids(self) -> list[str]:
        return list(self.goals)

    @property
    def goal(self) -> Goal:
        return self.goals[self.task_id]

    @property
    def instruction_text(self) -> str:
        return self.goal.instruction

    @property
    def elements(self) -> list[str]:
        return page_elements(self.state, self.shop, self.goal.instruction)

    def available_actions(self) -> dict[str, Any]:
        """WebShop's `get_available_actions`: search bar present, clickable values."""
        return {
            "has_search_bar": self.state.kind == "search",
            "clickables": list(clickables(self.state, self.shop)),
        }

    def format_observation(self, obs: str) -> str:
        return f"Observation:\n{obs}"

    def _reset(self, task_id: str) -> tuple[str, dict[str, Any]]:
        if task_id not in self.goals:
            raise KeyError(f"unknown WebShop-style goal {task_id!r}")
        self.state = PageState()
        return SEP.join(self.elements), {"instruction": self.goal.instruction}

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        new = transition(self.state, action, self.shop)
        if new is None:
            return SEP.join(self.elements), 0.0, False, {"invalid": True}
        if new.kind == "done":
            info = webshop_reward(self.shop.by_asin[new.asin], self.goal, new.options)
            new.reward = info.reward
            self.state = new
            return SEP.join(self.elements), info.reward, True, {"reward_info": info}
        self.state = new
        return SEP.join(self.elements), 0.0, False, {}
