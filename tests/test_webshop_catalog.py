"""The WebShop-style catalogue generator: deterministic, well-formed products, and goals that
follow WebShop's derivation rules (attributes/options from the target, budget from its price)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from ipr_lightning.envs.webshop.catalog import generate_catalog
from ipr_lightning.envs.webshop.shop import CATEGORY_SEP, Shop

ASIN = re.compile(r"B0[0-9A-Z]{8}")
BUTTONS = ("back to search", "< prev", "next >", "description", "features", "reviews", "buy now")
BUTTONS += ("search",)
CATEGORIES = {"beauty", "food", "fashion", "furniture", "electronics"}


@pytest.fixture(scope="module")
def catalog():
    return generate_catalog()


def fingerprint(products, goals):
    return (
        [(p.asin, p.name, p.price, p.pricing, p.attributes, dict(p.options)) for p in products],
        [(g.asin, g.instruction, g.attributes, dict(g.options), g.price_upper) for g in goals],
    )


def test_same_seed_same_catalog_different_seed_differs(catalog):
    small = generate_catalog(300, 100, seed=7)
    assert fingerprint(*small) == fingerprint(*generate_catalog(300, 100, seed=7))
    assert fingerprint(*small) != fingerprint(*generate_catalog(300, 100, seed=8))
    assert fingerprint(*catalog) == fingerprint(*generate_catalog())


def test_same_seed_same_catalog_across_processes():
    code = (
        "from ipr_lightning.envs.webshop.catalog import generate_catalog\n"
        "p, g = generate_catalog(200, 50, seed=3)\n"
        "print([(x.asin, x.name, x.price) for x in p], [(x.asin, x.instruction) for x in g])"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    ]
    assert runs[0] == runs[1] and runs[0]


def test_sizes(catalog):
    products, goals = catalog
    assert (len(products), len(goals)) == (5000, 1824)
    products, goals = generate_catalog(n_products=300, n_goals=100)
    assert (len(products), len(goals)) == (300, 100)
    assert generate_catalog(5, 5)[1] and generate_catalog(0, 0) == ([], [])


def test_more_goals_than_products_is_rejected():
    with pytest.raises(ValueError, match="n_goals"):
        generate_catalog(n_products=10, n_goals=11)


def test_asins_are_unique_and_amazon_shaped(catalog):
    products, _ = catalog
    assert all(ASIN.fullmatch(p.asin) for p in products)
    assert len({p.asin for p in products}) == len(products)
    Shop(products)  # the shop's own duplicate check agrees


def test_types_and_categories_cover_webshop(catalog):
    products, _ = catalog
    assert {p.category for p in products} == CATEGORIES
    types = {(p.category, p.query, p.product_category) for p in products}
    assert len(types) >= 60
    for category in CATEGORIES:
        assert len({q for c, q, _ in types if c == category}) >= 12
    assert all(len(path.split(f" {CATEGORY_SEP} ")) >= 3 for _, _, path in types)
    assert all(q == q.lower() for _, q, _ in types)


def test_every_type_has_several_similar_products(catalog):
    products, _ = catalog
    per_query: dict[str, int] = {}
    for p in products:
        per_query[p.query] = per_query.get(p.query, 0) + 1
    assert min(per_query.values()) >= 40


def test_products_are_well_formed(catalog):
    products, _ = catalog
    ranged = 0
    for p in products:
        assert 2 <= len(p.attributes) <= 5 and len(set(p.attributes)) == len(p.attributes)
        assert 3 <= len(p.bullet_points) <= 5
        assert 2 <= len(re.findall(r"[.!?](?:\s|$)", p.description)) <= 4
        assert 0 <= len(p.reviews) <= 5 and all(1 <= r.score <= 5 for r in p.reviews)
        if p.reviews:
            mean = sum(r.score for r in p.reviews) / len(p.reviews)
            assert p.rating == f"{mean:.1f}"
        else:
            assert p.rating == "N.A."
        # A server strips every text node and drops empty ones: the embedded pages, which
        # show these fields as they are, only match if they are already like that.
        shown = [
            p.name,
            p.description,
            *p.bullet_points,
            *(v for vs in p.options.values() for v in vs),
        ]
        shown += [x for r in p.reviews for x in (r.title, r.body)]
        assert all(x and x == x.strip() and "  " not in x for x in shown), p.asin
        text = " ".join([p.name, *p.bullet_points, p.description]).lower()
        assert all(a in text for a in p.attributes), p.asin
        assert len(p.options) <= 3
        for values in p.options.values():
            assert 2 <= len(values) <= 8 and len(set(values)) == len(values)
        if len(p.pricing) == 1:
            assert p.price == p.pricing[0]
        else:
            ranged += 1
            low, high = p.pricing
            assert low < high and low <= p.price <= high
        assert all(round(x, 2) == x > 0 for x in (*p.pricing, p.price))
    assert 0.10 < ranged / len(products) < 0.20


def test_clickable_values_are_safe(catalog):
    products, _ = catalog
    for p in products:
        values = [v for vs in p.options.values() for v in vs]
        assert len(set(values)) == len(values), p.asin  # one click names one option value
        for phrase in (*values, *p.attributes):
            assert phrase == phrase.lower() and phrase not in BUTTONS
            assert "[" not in phrase and "]" not in phrase


def test_goals_follow_their_targets(catalog):
    products, goals = catalog
    by_asin = {p.asin: p for p in products}
    assert len({g.asin for g in goals}) == len(goals)
    for g in goals:
        target = by_asin[g.asin]
        assert (g.name, g.query, g.category, g.product_category) == (
            target.name,
            target.query,
            target.category,
            target.product_category,
        )
        assert 1 <= len(g.attributes) <= 3 and set(g.attributes) <= set(target.attributes)
        assert set(g.options) <= set(target.options)
        assert bool(g.options) == bool(target.options)
        if len(target.options) == 1:
            assert set(g.options) == set(target.options)
        assert all(v in target.options[name] for name, v in g.options.items())
        assert g.instruction == g.instruction.lower()
        assert g.query in g.instruction
        assert all(a in g.instruction for a in g.attributes)
        assert all(v in g.instruction for v in g.options.values())


def test_goal_budgets_follow_webshops_rule(catalog):
    products, goals = catalog
    by_asin = {p.asin: p for p in products}
    budgets = 0
    for g in goals:
        price = by_asin[g.asin].price
        assert price <= g.price_upper
        if g.price_upper == 1_000_000.0:
            assert "price lower than" not in g.instruction
            assert price >= 980.0  # fewer than two budget steps above it
        else:
            budgets += 1
            assert g.price_upper % 10 == 0 and g.price_upper < price + 50
            assert g.instruction.endswith(f", and price lower than {g.price_upper:.2f} dollars")
    assert budgets > 0.9 * len(goals)


def test_goal_order_is_shuffled_targets(catalog):
    products, goals = catalog
    position = {p.asin: i for i, p in enumerate(products)}
    order = [position[g.asin] for g in goals]
    assert order != sorted(order)
    openings = {" ".join(g.instruction.split()[:2]) for g in goals}
    assert len(openings) >= 8
