"""InterCode-SQL's reward on hand-computed cases.

reward = IoU of the row multisets; if the shared rows give a Kendall tau-b (paired by
position: the shared rows in the agent's order against the gold order), reward =
round(tau * IoU, 2); both empty -> 1; an error -> 0. Rows are compared as text: InterCode's
`str(row)` of the driver's values (`intercode`, the default) or of canonical values
(`canonical`).
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

import pytest

from ipr_lightning.envs.intercode_sql.reward import canonical_row, intercode_reward, kendall_tau_b

GOLD = [(1,), (2,), (3,)]


@pytest.mark.parametrize(
    "agent, gold, expected",
    [
        (GOLD, GOLD, 1.0),  # IoU 1, tau 1
        ([(3,), (2,), (1,)], GOLD, -1.0),  # IoU 1, every pair discordant: tau -1
        # x = (1, 3, 2) against y = (1, 2, 3): pairs 01, 02 concordant, 12 discordant
        # -> tau (2 - 1) / 3 = 1/3 -> round(0.333, 2)
        ([(1,), (3,), (2,)], GOLD, 0.33),
        ([(1,), (2,), (4,)], GOLD, 0.5),  # shared {1, 2}, union {1, 2, 3, 4}; tau 1
        # duplicates count: agent {1: 2, 2: 1}, gold {1: 1, 2: 1}; shared 2, union 3
        ([(1,), (1,), (2,)], [(1,), (2,)], 0.67),
        # one shared row: tau is undefined, the IoU 1/3 stays unrounded
        ([(1,), (5,)], [(1,), (2,)], 1 / 3),
        ([], [], 1.0),  # both empty
        ([], GOLD, 0.0),
        (GOLD, [], 0.0),
        (None, GOLD, 0.0),  # the last query failed (or none ran)
        ([(1, "a")], [(1, "b")], 0.0),  # rows compare whole
    ],
)
def test_hand_computed_rewards(agent, gold, expected):
    assert intercode_reward(agent, gold) == pytest.approx(expected)


def test_rounding_follows_scipys_float_steps():
    """IoU 3/8 and a tau that is 1 in exact arithmetic: scipy's float steps (which InterCode
    uses) give 0.9999999999999998, so round(tau * 0.375, 2) = 0.37 (checked against
    InterCode's code with scipy); an exact 1.0 would give 0.38."""
    agent = [(2, "a"), (0, "a"), (0, "a"), (4, "a")]
    gold = [(3, "b"), (3, "a"), (0, "a"), (3, "b"), (0, "a"), (4, "a"), (4, "b")]
    assert intercode_reward(agent, gold) == 0.37


def test_driver_types_are_canonical():
    """MariaDB's Decimal/datetime and SQLite's int/float/text give the same rows (canonical
    mode); InterCode's own comparison tells "(Decimal('329000'),)" from "(329000,)"."""
    assert canonical_row((Decimal("329000"), Decimal("5.00"), None, True)) == (329000, 5.0, None, 1)
    assert canonical_row((dt.datetime(2010, 1, 2, 3, 4, 5), b"x")) == ("2010-01-02 03:04:05", "x")
    assert intercode_reward([(Decimal("329000"),)], [(329000,)], "canonical") == 1.0
    assert intercode_reward([(Decimal("329000"),)], [(329000,)], "intercode") == 0.0


def test_decimal_scale_counts_under_intercode_only():
    """Agent (Decimal('1.5000'),) against gold (Decimal('1.50'),).
    intercode: the texts "(Decimal('1.5000'),)" and "(Decimal('1.50'),)" differ: shared 0,
    union 2 -> IoU 0 -> 0.0 (as InterCode scores it on MariaDB).
    canonical: both rows are (1.5,): shared 1, union 1 -> IoU 1; one shared row, so tau is
    undefined and the IoU stays -> 1.0."""
    agent, gold = [(Decimal("1.5000"),)], [(Decimal("1.50"),)]
    assert intercode_reward(agent, gold) == 0.0  # the default is InterCode's comparison
    assert intercode_reward(agent, gold, "intercode") == 0.0
    assert intercode_reward(agent, gold, "canonical") == 1.0


def test_reversed_dates_rank_by_their_text():
    """Gold: the dates 2020-01-02, 2020-01-09, 2020-01-10 in that order; the agent's rows are
    the same three reversed. IoU 1 in both modes; tau decides.
    intercode: rows rank by "(datetime.date(2020, 1, D),)", i.e. by the text after "1, ":
    "10),)" < "2),)" < "9),)", so the ranks are gold y = (1, 2, 0), agent x = (0, 2, 1).
    Pairs 01: y+ x+ concordant; 02: y- x+ discordant; 12: y- x- concordant ->
    tau = (2 - 1) / 3 -> round(1/3 * 1, 2) = 0.33 (what InterCode gives).
    canonical: '2020-01-02' < '2020-01-09' < '2020-01-10' rank like the dates, every pair
    of the reversal is discordant -> tau -1 -> -1.0."""
    gold = [(dt.date(2020, 1, 2),), (dt.date(2020, 1, 9),), (dt.date(2020, 1, 10),)]
    agent = gold[::-1]
    assert intercode_reward(agent, gold, "intercode") == 0.33
    assert intercode_reward(agent, gold, "canonical") == -1.0
    assert intercode_reward(gold, gold, "intercode") == 1.0


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown SQL reward mode"):
        intercode_reward(GOLD, GOLD, "fuzzy")


def test_kendall_tau_b_with_ties():
    # x ties on its first two items: those pairs count in neither side of x's normaliser.
    # pairs: 01 x-tie; 02 (+,+) concordant; 12 (+,+) concordant -> 2 / sqrt(2 * 3)
    assert kendall_tau_b([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))
    assert math.isnan(kendall_tau_b(["a"], ["a"]))
    assert math.isnan(kendall_tau_b(["a", "a"], ["b", "c"]))  # no order in x
    assert kendall_tau_b(["b", "a"], ["a", "b"]) == -1.0
