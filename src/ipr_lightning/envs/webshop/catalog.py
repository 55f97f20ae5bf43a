"""Deterministic generator of a WebShop-style product catalogue and its shopping goals.

WebShop's real product data is not available offline, so `generate_catalog` builds a stand-in:
products of ~70 invented product types across WebShop's five top categories (beauty, food,
fashion, furniture, electronics), each with an Amazon-like title, bullet points, description,
options, pricing and reviews, plus goals derived from target products the way WebShop derives
them (a subset of the target's attributes and options, and a budget from its price). Products
of one type share query, breadcrumb and attribute pool, so every target has near-miss
distractors. Vocabulary lives in `webshop_vocab.py`.

Only `random.Random` objects seeded from the call's seed are used, and no set or hash order is
ever iterated, so a seed gives identical output in every run and process.
"""

from __future__ import annotations

import functools
import random
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ipr_lightning.envs.webshop import vocab
from ipr_lightning.envs.webshop.shop import CATEGORY_SEP, Goal, Product, Review

PRICE_RANGE = tuple(10.0 * i for i in range(1, 100))
"""Budget steps a goal's `price_upper` is drawn from (WebShop's rule)."""
NO_BUDGET = 1_000_000.0
"""`price_upper` of a goal whose instruction names no price."""
RANGE_PRICING_SHARE = 0.15
"""Share of products priced as a (low, high) range."""
PAGE_BUTTONS = (
    "back to search",
    "< prev",
    "next >",
    "description",
    "features",
    "reviews",
    "buy now",
    "search",
)
"""Clickable page labels no option value or attribute may equal."""

_ASIN_CHARS = string.digits + string.ascii_uppercase
_FIELD = re.compile(r"{(\w+)}")
_FIRST_LETTER = re.compile(r"[a-z]")
_SMALL_WORDS = ("a", "and", "for", "in", "of", "or", "the", "to", "with")
_A_PREFIXES = ("usb", "usda", "uv", "uni", "one", "eu")
_AN_PREFIXES = ("hdmi", "hdr", "rgb", "led", "msg", "spf", "8 ", "11 ", "18 ")
_SCORES = (1, 2, 3, 4, 5)
_SCORE_WEIGHTS = (5, 7, 13, 30, 45)

# Title layouts: segments appended in order; a segment naming an empty field is left out
# (the first one never is). {aud} is " for Women" or "", {a1}/{a2} title-cased attributes.
_TITLE_TEMPLATES = (
    ("{brand} {a1} {head}{aud}", ", {feature}", " - {spec}"),
    ("{brand} {head}{aud}", " - {a1} and {a2}", ", {feature}", " ({spec})"),
    ("{brand} {feature} {head}", ", {a1}", ", {spec}"),
    ("{head} by {brand}", " - {a1} {feature}", ", {spec}"),
    ("{brand} {head}", " {spec}", ", {a1}", ", {a2}", ", {feature}"),
    ("{brand} {a1} {head}{aud}", " with {feature}"),
    ("{brand} {head}{aud}", " with {feature}", " - {spec}"),
)


@dataclass(frozen=True)
class ProductType:
    """One kind of product: what its listings share."""

    category: str
    query: str
    product_category: str
    head: str
    """Title-cased head noun phrase used in titles ("Clip in Hair Extensions")."""
    audiences: tuple[str, ...]
    attributes: tuple[str, ...]
    options: tuple[tuple[str, tuple[str, ...]], ...]
    """(option name, value pool) in page order."""
    low: float
    high: float
    features: tuple[str, ...]

    @property
    def countable_singular(self) -> bool:
        """Whether the query takes "a"/"an" ("a tv stand", but "potato chips", "olive oil")."""
        last = self.query.split()[-1]
        plural = last.endswith("s") and not last.endswith("ss")
        return not plural and last not in vocab.MASS_NOUNS


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _check_phrase(phrase: str, where: str) -> None:
    if "[" in phrase or "]" in phrase or phrase in PAGE_BUTTONS or phrase != phrase.lower():
        raise ValueError(f"bad vocabulary phrase {phrase!r} in {where}")


@functools.cache
def product_types() -> tuple[ProductType, ...]:
    """All product types, in vocabulary order (validated once)."""
    types = []
    for category in vocab.CATEGORIES:
        shared = _split(vocab.SHARED_ATTRIBUTES[category])
        for query, path, head, auds, attrs, opts, price, feats in vocab.PRODUCT_TYPES[category]:
            own = _split(attrs)
            # A phrase inside the query or head would be on every page of the type: leave it out.
            always_there = f"{query} | {head.lower()}"
            attributes = tuple(
                a for a in own + tuple(a for a in shared if a not in own) if a not in always_there
            )
            options = tuple(
                (name, _split(vocab.OPTION_POOLS[key]))
                for name, key in (item.split("=") for item in _split(opts))
            )
            for phrase in attributes + tuple(v for _, pool in options for v in pool):
                _check_phrase(phrase, query)
            if len(attributes) < 8 or len(path.split(CATEGORY_SEP)) < 3:
                raise ValueError(f"product type {query!r} needs 8 attributes and 3 levels")
            low, high = (float(x) for x in price.split("-"))
            types.append(
                ProductType(
                    category=category,
                    query=query,
                    product_category=path,
                    head=head,
                    audiences=_split(auds),
                    attributes=attributes,
                    options=options,
                    low=low,
                    high=high,
                    features=_split(feats),
                )
            )
    return tuple(types)


@functools.cache
def _brands(category: str) -> tuple[str, ...]:
    return _split(vocab.BRANDS[category])


def _title_case(text: str) -> str:
    """Amazon-style title case: "3.5 ounce (pack of 6)" -> "3.5 Ounce (Pack of 6)"."""
    words = text.split(" ")
    return " ".join(
        word if i and word in _SMALL_WORDS else _FIRST_LETTER.sub(lambda m: m[0].upper(), word, 1)
        for i, word in enumerate(words)
    )


def _join(items: Sequence[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    if len(items) < 2:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _asins(rng: random.Random, n: int) -> list[str]:
    seen: set[str] = set()  # membership only; order comes from the list
    out: list[str] = []
    while len(out) < n:
        asin = "B0" + "".join(rng.choices(_ASIN_CHARS, k=8))
        if asin not in seen:
            seen.add(asin)
            out.append(asin)
    return out


def _options(rng: random.Random, ptype: ProductType) -> dict[str, tuple[str, ...]]:
    out = {}
    for name, pool in ptype.options:
        k = rng.randint(2, min(8, len(pool)))
        out[name] = tuple(pool[i] for i in sorted(rng.sample(range(len(pool)), k)))
    return out


def _shelf_price(rng: random.Random, amount: float) -> float:
    return round(int(amount) + rng.choice((0.99, 0.99, 0.95, 0.49, 0.0, 0.97)), 2)


def _pricing(rng: random.Random, ptype: ProductType) -> tuple[tuple[float, ...], float]:
    """(pricing, price): a single shelf price, or a (low, high) range and a draw inside it."""
    low = _shelf_price(rng, rng.uniform(ptype.low, ptype.high))
    if rng.random() >= RANGE_PRICING_SHARE:
        return (low,), low
    high = _shelf_price(rng, low * rng.uniform(1.15, 1.8))
    if high <= low:
        high = round(low + 1.0, 2)
    return (low, high), round(rng.uniform(low, high), 2)


def _title_spec(rng: random.Random, options: Mapping[str, tuple[str, ...]]) -> str:
    choices = [""]
    for name, values in options.items():
        if name == "color" and len(values) >= 3:
            choices.append(f"{len(values)} Colors")
        elif name == "size":
            choices.append(_title_case(values[0]))
    return rng.choice(choices)


def _title(
    rng: random.Random, ptype: ProductType, brand: str, attrs: Sequence[str], options: Mapping
) -> tuple[str, int]:
    """The product title and how many of `attrs` (a prefix) it names."""
    template = rng.choice(_TITLE_TEMPLATES)
    in_title = min(2, len(attrs) - 1)
    audience = rng.choice(ptype.audiences) if ptype.audiences and rng.random() < 0.6 else ""
    fields = {
        "brand": brand,
        "head": ptype.head,
        "aud": f" for {audience}" if audience else "",
        "feature": rng.choice(ptype.features),
        "spec": _title_spec(rng, options),
        "a1": _title_case(attrs[0]) if in_title >= 1 else "",
        "a2": _title_case(attrs[1]) if in_title >= 2 else "",
    }
    kept = [
        seg
        for i, seg in enumerate(template)
        if i == 0 or all(fields[f] for f in _FIELD.findall(seg) if f != "aud")
    ]
    used = "".join(kept)
    return "".join(seg.format(**fields) for seg in kept), ("{a1}" in used) + ("{a2}" in used)


def _bullets(
    rng: random.Random,
    ptype: ProductType,
    brand: str,
    attrs: Sequence[str],
    options: Mapping[str, tuple[str, ...]],
) -> tuple[str, ...]:
    """3-5 bullet points; every phrase of `attrs` appears in one of them verbatim."""
    feature = rng.choice(ptype.features)
    generic = [
        f"{feature.upper()} - Thoughtful extras like {feature.lower()} make every day "
        "a little easier.",
        vocab.CATEGORY_BULLETS[ptype.category],
        f"{brand.upper()} PROMISE - Not satisfied? Contact us and we will make it right.",
    ]
    for name, values in options.items():
        generic.append(
            f"MORE CHOICES - Available in {len(values)} {vocab.OPTION_WORDS[name]}, "
            "so you can pick the one that suits you."
        )
    count = rng.randint(3, 5)
    n_groups = min(len(attrs), count)
    groups = [_join(attrs[i::n_groups]) for i in range(n_groups)]
    labels = rng.sample(vocab.BULLET_LABELS, n_groups)
    bullets = []
    for label, group in zip(labels, groups, strict=True):
        detail = rng.choice(vocab.CATEGORY_DETAILS[ptype.category])
        template = rng.choice(vocab.ATTRIBUTE_BULLETS)
        bullets.append(
            template.format(label=label, attr=group, detail=detail, detail_cap=detail.capitalize())
        )
    bullets += rng.sample(generic, min(len(generic), count - n_groups))
    rng.shuffle(bullets)
    return tuple(bullets)


def _description(rng: random.Random, ptype: ProductType, brand: str, attrs: Sequence[str]) -> str:
    """2-4 sentences; every phrase of `attrs` appears verbatim."""
    opener = rng.choice(vocab.DESCRIPTION_OPENERS)
    sentences = [opener.format(brand=brand, head=ptype.head, query=ptype.query)]
    if attrs:
        sentences.append(rng.choice(vocab.DESCRIPTION_ATTRIBUTES).format(attrs=_join(attrs)))
    extras = [
        rng.choice(vocab.CATEGORY_SENTENCES[ptype.category]),
        rng.choice(vocab.DESCRIPTION_CLOSERS),
    ]
    sentences += extras[: rng.randint(max(0, 2 - len(sentences)), 2)]
    return " ".join(sentences)


def _reviews(
    rng: random.Random, ptype: ProductType, brand: str, attrs: Sequence[str]
) -> tuple[tuple[Review, ...], str]:
    """0-5 reviews and the rating text ("4.3", "N.A.")."""
    reviews = []
    for _ in range(rng.randint(0, 5)):
        score = rng.choices(_SCORES, weights=_SCORE_WEIGHTS)[0]
        body = rng.choice(vocab.REVIEW_BODIES[score])
        body = body.format(query=ptype.query, brand=brand, attr=rng.choice(attrs))
        reviews.append(Review(rng.choice(vocab.REVIEW_TITLES[score]), score, body))
    if not reviews:
        return (), "N.A."
    return tuple(reviews), f"{sum(r.score for r in reviews) / len(reviews):.1f}"


def _product(rng: random.Random, ptype: ProductType, asin: str) -> Product:
    brand = rng.choice(_brands(ptype.category))
    attrs = rng.sample(ptype.attributes, rng.randint(2, min(5, len(ptype.attributes))))
    options = _options(rng, ptype)
    pricing, price = _pricing(rng, ptype)
    name, n_in_title = _title(rng, ptype, brand, attrs, options)
    rest = attrs[n_in_title:]
    in_bullets = [a for a in rest if rng.random() < 0.7]
    in_description = [a for a in rest if a not in in_bullets]
    reviews, rating = _reviews(rng, ptype, brand, attrs)
    return Product(
        asin=asin,
        name=name,
        query=ptype.query,
        category=ptype.category,
        product_category=ptype.product_category,
        attributes=tuple(attrs),
        options=options,
        pricing=pricing,
        price=price,
        description=_description(rng, ptype, brand, in_description),
        bullet_points=_bullets(rng, ptype, brand, in_bullets, options),
        reviews=reviews,
        rating=rating,
    )


def _budget(rng: random.Random, price: float) -> float:
    """WebShop's rule: the larger of two draws among the 4 budget steps above the price."""
    candidates = [p for p in PRICE_RANGE if p > price][:4]
    if len(candidates) < 2:
        return NO_BUDGET
    return max(rng.sample(candidates, 2))


def _article(rng: random.Random, ptype: ProductType, phrase: str) -> str:
    if not ptype.countable_singular:
        return rng.choice(("", "some "))
    if phrase.startswith(_AN_PREFIXES):
        return "an "
    return "an " if phrase[0] in "aeiou" and not phrase.startswith(_A_PREFIXES) else "a "


def _instruction(
    rng: random.Random,
    ptype: ProductType,
    attrs: Sequence[str],
    options: Mapping[str, str],
    price_upper: float,
) -> str:
    """A lowercase request naming the query, every attribute and option value, the budget."""
    noun, be = ptype.query, ("is" if ptype.countable_singular else "are")
    layouts = ("before", "that", "with", "split") if len(attrs) >= 2 else ("before", "that")
    layout = rng.choices(layouts, weights=(4, 2, 2, 2)[: len(layouts)])[0]
    if layout == "before":
        phrase = f"{_join(attrs)} {noun}"
    elif layout == "that":
        phrase = f"{noun} that {be} {_join(attrs)}"
    elif layout == "with":
        phrase = f"{noun} with {_join(attrs)}"
    else:
        phrase = f"{attrs[0]} {noun} that {be} {_join(attrs[1:])}"
    text = f"{rng.choice(vocab.INSTRUCTION_OPENERS)} {_article(rng, ptype, phrase)}{phrase}"
    wanted = [rng.choice(vocab.OPTION_PHRASES[n]).format(v=v) for n, v in options.items()]
    if wanted:
        text += ", " + _join(wanted)
    if price_upper < NO_BUDGET:
        text += f", and price lower than {price_upper:.2f} dollars"
    return text


def _goal(rng: random.Random, product: Product, ptype: ProductType) -> Goal:
    k = min(rng.choices((1, 2, 3), weights=(4, 4, 2))[0], len(product.attributes))
    attrs = tuple(rng.sample(product.attributes, k))
    names = list(product.options)
    if len(names) >= 2:
        picked = sorted(rng.sample(range(len(names)), rng.randint(1, len(names))))
        names = [names[i] for i in picked]
    options = {name: rng.choice(product.options[name]) for name in names}
    price_upper = _budget(rng, product.price)
    return Goal(
        asin=product.asin,
        instruction=_instruction(rng, ptype, attrs, options, price_upper),
        attributes=attrs,
        options=options,
        price_upper=price_upper,
        name=product.name,
        query=product.query,
        category=product.category,
        product_category=product.product_category,
    )


def generate_catalog(
    n_products: int = 5000, n_goals: int = 1824, seed: int = 0
) -> tuple[list[Product], list[Goal]]:
    """`n_products` products (types spread evenly, in shuffled order) and `n_goals` goals,
    goal i targeting a distinct product, in a seeded shuffled order (served as "fixed_i").

    The same seed gives identical products and goals in every run and process."""
    if n_goals > n_products:
        raise ValueError(
            f"n_goals ({n_goals}) must not exceed n_products ({n_products}): "
            "each goal needs its own target product"
        )
    if n_products < 0 or n_goals < 0:
        raise ValueError("n_products and n_goals must be non-negative")
    types = product_types()
    rng = random.Random(f"webshop-catalog:{seed}")
    layout = [types[i % len(types)] for i in range(n_products)]
    rng.shuffle(layout)
    asins = _asins(rng, n_products)
    products = [_product(rng, ptype, asin) for ptype, asin in zip(layout, asins, strict=True)]
    goal_rng = random.Random(f"webshop-goals:{seed}")
    targets = goal_rng.sample(range(n_products), n_goals)
    return products, [_goal(goal_rng, products[i], layout[i]) for i in targets]
