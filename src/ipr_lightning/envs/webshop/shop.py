"""The WebShop-style shop's records and its search engine.

`Product` and `Goal` carry the fields WebShop's engine uses (its `items_*.json` product
records and its goal dicts), under Python names; `Shop` holds a catalogue, looks products up
by ASIN and ranks them for a query with BM25 (WebShop uses Lucene BM25 through pyserini; we
use `rank-bm25`), returning the top `SEARCH_RETURN_N` (50) as WebShop does.

The catalogue and goals are generated (`webshop_catalog.py`): WebShop's real product data is
not available offline. Everything here is "WebShop-style", never WebShop itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

SEARCH_RETURN_N = 50
"""Results a search returns (WebShop's constant)."""
PAGE_SIZE = 10
"""Results per page (WebShop's constant)."""
CATEGORY_SEP = "›"
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


@dataclass(frozen=True)
class Review:
    title: str
    score: int
    """1-5 stars."""
    body: str


@dataclass(frozen=True, eq=False)
class Product:
    asin: str
    """"B0" + 8 characters of [0-9A-Z], as Amazon's."""
    name: str
    """The title shown on result and item pages."""
    query: str
    """The shopping query the product was listed under (lowercase), e.g. "hair extensions"."""
    category: str
    """Top category: beauty, food, fashion, furniture or electronics (WebShop's five)."""
    product_category: str
    """Breadcrumb path joined by " › ", e.g. "Beauty & Personal Care › Hair Care › ..."."""
    attributes: tuple[str, ...]
    """Lowercase attribute phrases ("long lasting", "machine wash")."""
    options: Mapping[str, tuple[str, ...]]
    """Option name (lowercase: "size", "color", ...) -> its values (lowercase), page order."""
    pricing: tuple[float, ...]
    """(price,) or (low, high), as WebShop's `pricing`."""
    price: float
    """The price the reward compares with the budget (WebShop draws it once in the range)."""
    description: str
    bullet_points: tuple[str, ...]
    reviews: tuple[Review, ...] = ()
    rating: str = "N.A."
    """Average stars as text ("4.5"), "N.A." without reviews."""

    @property
    def price_tag(self) -> str:
        """ "$12.99" or "$12.99 to $15.99", as pages show it."""
        return " to ".join(f"${p:.2f}" for p in self.pricing)

    def search_text(self) -> str:
        """What the search index sees: title, query, breadcrumb, attributes and features."""
        return " ".join(
            [
                self.name,
                self.query,
                self.product_category.replace(CATEGORY_SEP, " "),
                " ".join(self.attributes),
                " ".join(self.bullet_points),
            ]
        )


@dataclass(frozen=True)
class Goal:
    """A shopping instruction derived from a target product, as WebShop derives its goals."""

    asin: str
    """The target product."""
    instruction: str
    """Lowercase, e.g. "i need a long lasting deodorant for sensitive skin, and price lower
    than 40.00 dollars"."""
    attributes: tuple[str, ...]
    """The target's attributes the instruction asks for (scored by the reward)."""
    options: Mapping[str, str] = field(default_factory=dict)
    """Option name -> the wanted value (scored by the reward)."""
    price_upper: float = 1_000_000.0
    """The budget (1,000,000 when the instruction names none, as WebShop)."""
    name: str = ""
    """The target's title (the reward's type match compares nouns)."""
    query: str = ""
    category: str = ""
    product_category: str = ""


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens for search ("men's" stays one token, "8.5" -> "8", "5")."""
    return _TOKEN.findall(text.lower())


class Shop:
    """A catalogue with lookup by ASIN and BM25 search."""

    def __init__(self, products: Sequence[Product]) -> None:
        self.products = list(products)
        self.by_asin = {p.asin: p for p in self.products}
        if len(self.by_asin) != len(self.products):
            raise ValueError("duplicate ASINs in the catalogue")
        # MC rollouts replay the expert's prefix, searches included: answer repeats at once.
        self._results: dict[tuple[tuple[str, ...], int], list[Product]] = {}

    @cached_property
    def _index(self):  # built on first search: constructing a Shop stays cheap
        from rank_bm25 import BM25Okapi

        docs = [tokenize(p.search_text()) for p in self.products]
        postings: dict[str, set[int]] = {}
        for i, doc in enumerate(docs):
            for token in doc:
                postings.setdefault(token, set()).add(i)
        return BM25Okapi(docs), postings

    def search(self, keywords: str, top_n: int = SEARCH_RETURN_N) -> list[Product]:
        """The `top_n` best products containing at least one of the keywords (Lucene's OR),
        best BM25 score first, ties in catalogue order.

        Matching is by term presence, not by score > 0: BM25Okapi gives a term found in half
        the documents idf 0, and a score filter would drop those real matches."""
        import numpy as np

        tokens = tokenize(keywords)
        key = (tuple(tokens), top_n)
        if key not in self._results:
            if len(self._results) >= 4096:
                self._results.clear()
            bm25, postings = self._index
            hits = sorted(set().union(*(postings.get(t, ()) for t in tokens))) if tokens else []
            order = np.argsort(-np.asarray(bm25.get_batch_scores(tokens, hits)), kind="stable")
            self._results[key] = [self.products[hits[i]] for i in order[:top_n]]
        return list(self._results[key])
