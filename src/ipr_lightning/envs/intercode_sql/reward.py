"""InterCode-SQL's reward, and the value canonicalisation that makes two backends comparable.

InterCode scores the result rows of the agent's last query against the gold query's rows
(intercode-bench 0.1.22, `intercode/envs/sql/sql_env.py`, `SqlEnv.get_reward`):

    reward = |A ∩ G| / |A ∪ G|                       (multisets of rows, compared as text)
    reward = round(tau * reward, 2)                   if the shared rows give a Kendall tau

where tau is Kendall's tau-b between the shared rows in the agent's order and in the gold
order (paired by position, as InterCode calls `scipy.stats.kendalltau`); it is NaN (and the
IoU is kept unrounded) when there is only one shared row or no order can be told. Both
results empty -> 1. An error instead of rows -> 0. A reversed order can make the reward
negative: that is InterCode's formula, kept as it is.

What is compared (`mode`, `env.options.reward`):
- `intercode` (default): exactly InterCode's `str(row)` of each row as the driver's
  `fetchall()` returns it, and tau ranks those strings (lexicographic order). So
  `(Decimal('1.5000'),)` and `(Decimal('1.50'),)` are different rows, and
  `(datetime.date(2020, 1, 10),)` sorts before `(datetime.date(2020, 1, 2),)`. InterCode
  reads MariaDB through mysql-connector; our MySQL backend reads it through pymysql, which
  returns the same Python types for the column types of Spider's dump (int, Decimal,
  float, str, date, datetime). SQLite returns only int, float, str, bytes and None (DECIMAL
  columns are REAL, dates TEXT, SUM of ints an int), so on SQLite this mode is InterCode's
  comparison of SQLite's values, not a copy of MariaDB's rewards; gold and agent run on the
  same backend, so a gold query still scores 1.0 against itself on either.
- `canonical`: rows are compared as `str(canonical_row(row))`, so MariaDB's
  `Decimal('329000')` and SQLite's `329000` are the same row and both backends score alike.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import numpy as np

Row = tuple[Any, ...]


def canonical_value(value: Any) -> Any:
    """One Python value per SQL value, whatever the driver: ints, floats, str, None.

    DECIMAL with a fractional part (even `.00`) -> float; without -> int (MariaDB's SUM of
    ints); floats rounded to 6 decimals (MariaDB's AVG of a float column gives 510.333333,
    SQLite's 510.3333333333333); dates/times -> their SQL text; bytes -> text."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, float):  # engines print computed doubles with different digits
        return round(value, 6)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal):
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and exponent >= 0:
            return int(value)
        return round(float(value), 6)
    if isinstance(value, dt.datetime | dt.date | dt.time | dt.timedelta):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def canonical_row(row: Sequence[Any]) -> Row:
    return tuple(canonical_value(v) for v in row)


def kendall_tau_b(x: Sequence[Any], y: Sequence[Any]) -> float:
    """Kendall's tau-b of paired sequences of comparable items (NaN when undefined).

    tau_b = sum_{i<j} sx*sy / sqrt(sum sx^2 * sum sy^2), with sx = sign(x_i - x_j) (ties
    give 0). Items are replaced by their ranks first, so any sortable type works. O(n^2)
    in blocks of rows: 10,000 shared rows take about a second."""
    if len(x) != len(y):
        raise ValueError("kendall_tau_b needs sequences of equal length")
    rx, ry = _dense_ranks(x), _dense_ranks(y)
    concordance, pairs_x, pairs_y = 0, 0, 0
    for start in range(0, len(rx), 1024):
        sx = np.sign(rx[start : start + 1024, None] - rx[None, :])
        sy = np.sign(ry[start : start + 1024, None] - ry[None, :])
        concordance += int((sx * sy).sum())
        pairs_x += int((sx * sx).sum())
        pairs_y += int((sy * sy).sum())
    if pairs_x == 0 or pairs_y == 0:
        return math.nan
    # Every pair was counted twice. The same float steps as scipy's kendalltau (which InterCode
    # calls), so that round(tau * iou, 2) lands on the same side of a .xx5: a tau of 1 - 1e-16
    # times an IoU of 3/8 is 0.37 there, not 0.38.
    tau = (concordance // 2) / math.sqrt(pairs_x // 2) / math.sqrt(pairs_y // 2)
    return min(1.0, max(-1.0, tau))


def _dense_ranks(items: Sequence[Any]) -> np.ndarray:
    order = {v: i for i, v in enumerate(sorted(set(items)))}
    return np.array([order[v] for v in items], dtype=np.int64)


def _shared_in_order(items: list[str], shared: Counter[str]) -> list[str]:
    """`items` kept in their order, each only as often as it is shared."""
    left, out = Counter(shared), []
    for item in items:
        if left[item] > 0:
            left[item] -= 1
            out.append(item)
    return out


def row_text(row: Sequence[Any], mode: str = "intercode") -> str:
    """The text a row is compared as: InterCode's `str(row)` of the driver's values
    (`intercode`), or of `canonical_row(row)` (`canonical`)."""
    if mode == "intercode":
        return str(tuple(row))
    if mode == "canonical":
        return str(canonical_row(row))
    raise ValueError(f"unknown SQL reward mode {mode!r}; expected intercode or canonical")


def intercode_reward(
    agent: list[Row] | None, gold: list[Row] | None, mode: str = "intercode"
) -> float:
    """InterCode-SQL's reward of the agent's last result rows (None: an error or no query),
    rows compared as `row_text(row, mode)`."""
    if agent is None or gold is None:
        return 0.0
    agent_text = [row_text(r, mode) for r in agent]
    gold_text = [row_text(r, mode) for r in gold]
    count_agent, count_gold = Counter(agent_text), Counter(gold_text)
    union = count_agent | count_gold
    if not union:
        return 1.0  # both empty
    shared = count_agent & count_gold
    reward = sum(shared.values()) / sum(union.values())
    if shared:
        tau = kendall_tau_b(
            _shared_in_order(agent_text, shared), _shared_in_order(gold_text, shared)
        )
        if not math.isnan(tau):
            reward = round(tau * reward, 2)
    return reward
