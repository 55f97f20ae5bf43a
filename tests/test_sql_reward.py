"""InterCode-SQL's reward on hand-computed cases.

reward = IoU of the row multisets; if the shared rows give a Kendall tau-b (paired by
position: the shared rows in the agent's order against the gold order), reward =
round(tau * IoU, 2); both empty -> 1; an error -> 0.
"""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from ipr_lightning.envs.sql_reward import canonical_row, intercode_reward, kendall_tau_b

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
    """MariaDB's Decimal/datetime and SQLite's int/float/text give the same rows."""
    import datetime as dt

    assert canonical_row((Decimal("329000"), Decimal("5.00"), None, True)) == (329000, 5.0, None, 1)
    assert canonical_row((dt.datetime(2010, 1, 2, 3, 4, 5), b"x")) == ("2010-01-02 03:04:05", "x")
    assert intercode_reward([(Decimal("329000"),)], [(329000,)]) == 1.0


def test_kendall_tau_b_with_ties():
    # x ties on its first two items: those pairs count in neither side of x's normaliser.
    # pairs: 01 x-tie; 02 (+,+) concordant; 12 (+,+) concordant -> 2 / sqrt(2 * 3)
    assert kendall_tau_b([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))
    assert math.isnan(kendall_tau_b(["a"], ["a"]))
    assert math.isnan(kendall_tau_b(["a", "a"], ["b", "c"]))  # no order in x
    assert kendall_tau_b(["b", "a"], ["a", "b"]) == -1.0
