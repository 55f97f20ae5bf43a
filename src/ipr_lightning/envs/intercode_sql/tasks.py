"""InterCode-SQL tasks: loading, the train/test split, and the scripted expert.

    tasks = load_tasks("ic_spider_dev.json")        # or shipped_tasks(): intercode-bench's 23
    train, test = split_tasks(tasks, test_size=200)  # the paper's 200 test questions
    trajectory = expert_trajectory(env, task)        # played in the env, reward 1.0

Task files are InterCode's JSON (`[{"db", "gold", "query", "hardness", "db_tables"}]`) or its
CSV (`query,gold,db`); every record is checked, and a bad one is a `ValueError` naming the
file, the record and the field. Task ids are `sql-<index in the file>` (4 digits).

The split is deterministic (a hash of the question text and a seed) and keeps every copy of
a question (same text, case and spacing aside) on one side.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from ipr_lightning.data.records import Trajectory, Turn
from ipr_lightning.envs.base import record_episode
from ipr_lightning.envs.intercode_sql.dump import intercode_asset
from ipr_lightning.envs.intercode_sql.env import IntercodeSqlEnv, SqlTask

SHIPPED_QUESTIONS = "intercode/assets/datasets/sql_queries.csv"
SPLITS = ("train", "test", "all")


def _field(record: dict, key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: field {key!r} must be a non-empty string, got {value!r}")
    return value.strip()


def load_tasks(path: str | Path) -> list[SqlTask]:
    """Tasks of an InterCode JSON task file or CSV question file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"InterCode-SQL task file not found: {path}")
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            records: list = list(csv.DictReader(f))
    else:
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(records, list):
            raise ValueError(f"{path}: expected a JSON list of task records")
    tasks = []
    for i, record in enumerate(records):
        where = f"{path}: record {i}"
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected an object, got {type(record).__name__}")
        hardness = record.get("hardness") or "unknown"
        tasks.append(
            SqlTask(
                id=f"sql-{i:04d}",
                db=_field(record, "db", where),
                question=" ".join(_field(record, "query", where).split()),
                gold=_field(record, "gold", where),
                hardness=str(hardness),
            )
        )
    if not tasks:
        raise ValueError(f"{path}: no task records")
    return tasks


def shipped_tasks() -> list[SqlTask]:
    """The 23 question/gold pairs that ship in intercode-bench (no hardness labels)."""
    return load_tasks(intercode_asset(SHIPPED_QUESTIONS))


def _question_key(task: SqlTask) -> str:
    return " ".join(task.question.lower().split())


def split_tasks(tasks: Sequence[SqlTask], test_size: int, seed: int = 0) -> dict[str, list]:
    """{"train", "test", "all"}: exactly `test_size` test tasks, chosen by a seeded hash of
    the question; copies of one question always share a side. Both keep the file order."""
    if not 0 < test_size < len(tasks):
        raise ValueError(
            f"test size must be between 1 and {len(tasks) - 1} for {len(tasks)} tasks, "
            f"got {test_size}"
        )
    groups: dict[str, list[SqlTask]] = {}
    for task in tasks:
        groups.setdefault(_question_key(task), []).append(task)

    def rank(key: str) -> str:
        return hashlib.sha256(f"{seed}\0{key}".encode()).hexdigest()

    order = sorted(groups, key=rank)
    sizes = [len(groups[key]) for key in order]
    # reach[i]: bit n set when groups order[i:] can make exactly n tasks (a subset sum)
    reach = [1] * (len(order) + 1)
    for i in reversed(range(len(order))):
        reach[i] = reach[i + 1] | (reach[i + 1] << sizes[i])
    if not reach[0] >> test_size & 1:
        raise ValueError(f"no {test_size} test tasks without splitting a repeated question")
    test_ids: set[str] = set()
    need = test_size
    for i, key in enumerate(order):  # earliest groups by hash that still allow an exact total
        if need == 0:
            break
        if sizes[i] <= need and reach[i + 1] >> (need - sizes[i]) & 1:
            test_ids.update(t.id for t in groups[key])
            need -= sizes[i]
    return {
        "train": [t for t in tasks if t.id not in test_ids],
        "test": [t for t in tasks if t.id in test_ids],
        "all": list(tasks),
    }


# -- the scripted expert -------------------------------------------------------------------

_TABLE_REF = re.compile(r"\b(?:from|join)\s+[`\"]?(\w+)", re.IGNORECASE)


def tables_of(gold: str, known: Sequence[str]) -> list[str]:
    """Tables the gold query reads, in order of first use (matched to `known` names)."""
    by_lower = {name.lower(): name for name in known}
    found = [by_lower.get(m.lower()) for m in _TABLE_REF.findall(gold)]
    return list(dict.fromkeys(t for t in found if t))


def expert_steps(task: SqlTask, tables: Sequence[str]) -> list[tuple[str, str]]:
    """(thought, action) pairs: look at the schema when the answer needs more than one
    table (or, for every other single-table question, at that table), query, submit."""
    steps: list[tuple[str, str]] = []
    index = int(task.id.rsplit("-", 1)[-1]) if task.id[-1].isdigit() else 0
    if len(tables) > 1:
        steps.append(
            ("I should first find out which tables this database has.", "```sql\nSHOW TABLES\n```")
        )
        for table in tables[:2]:
            steps.append(
                (
                    f"The `{table}` table looks relevant. I should check its columns.",
                    f"```sql\nDESCRIBE {table}\n```",
                )
            )
    elif tables and index % 2 == 1:
        steps.append(
            (
                f"The question is about `{tables[0]}`. I should check which columns it has.",
                f"```sql\nDESCRIBE {tables[0]}\n```",
            )
        )
    named = [f"`{t}`" for t in tables]
    joined = ", ".join(named[:-1]) + " and " + named[-1] if len(named) > 1 else "".join(named)
    gold = task.gold.strip().rstrip(";").strip()
    steps.append(
        (
            f"I can answer the question with a query over {joined or 'the database'}.",
            f"```sql\n{gold}\n```",
        )
    )
    steps.append(("", "submit"))  # its thought reads the result: `submit_thought`
    return steps


def submit_thought(rows: list | None) -> str:
    """Why the expert submits, from the rows its last query returned."""
    if not rows:
        found = "no rows, which answers the question"
    else:
        shown = ", ".join(map(repr, rows[:2])) + (", ..." if len(rows) > 2 else "")
        found = f"{len(rows)} {'row' if len(rows) == 1 else 'rows'} ({shown}): the answer"
    return f"The query ran without errors and returned {found}. I can now submit it."


def expert_trajectory(
    env: IntercodeSqlEnv, task: SqlTask, example: list[Turn] | None = None
) -> Trajectory:
    """Play the expert in the env: the observations come from the database."""

    def outputs() -> Iterator[str]:  # runs after the reset: it can look at the database
        for thought, action in expert_steps(task, tables_of(task.gold, env.table_names())):
            if action == "submit":
                yield f"Thought: {submit_thought(env.last_rows)}\nAction: submit"
            else:  # the paper's layout: `Action: \n```sql`
                yield f"Thought: {thought}\nAction: \n{action}"

    steps = outputs()
    meta = {"env": "intercode_sql", "db": task.db, "hardness": task.hardness}
    return record_episode(env, task.id, lambda obs, info: next(steps, None), example, meta)
