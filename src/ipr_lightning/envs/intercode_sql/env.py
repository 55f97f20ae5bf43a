"""InterCode-SQL: answer a question about a Spider database by querying it (max 10 turns).

    env = IntercodeSqlEnv({t.id: t for t in tasks}, backend)
    obs, info = env.reset(options={"task_id": tasks[0].id})   # obs = the question
    env.step("Thought: ...\\nAction: ```sql\\nSHOW TABLES\\n```")  # obs = result rows
    env.step("Thought: ...\\nAction: submit")                   # reward = InterCode's

Each turn runs the action's whole ```sql block (every line: the original code ran only the
first line of a block, IPR_SPEC § 3) in a read-only session of the task's database
(`sql_backends`); the observation is the result rows as Python tuples, as InterCode shows
them (`[(1, 'PP'), (4, 'BK')]`), summarised beyond `observation_rows` rows or
`observation_chars` characters (the full rows still score), or the database's error text.
`Action: submit` ends the episode with InterCode's reward of the last query's rows against
the gold query's (`sql_reward.intercode_reward`), rows compared as `reward_mode` says
(`env.options.reward`: `intercode`, the driver's raw values as InterCode compares them, or
`canonical`); observations show canonical values in either mode. Reaching `max_turns`
without submitting is truncated with reward 0, as in the paper.

Tasks come from InterCode task files (`[{"db", "gold", "query", "hardness", ...}]`) or the
23 questions of intercode-bench's `sql_queries.csv` (`sql_tasks.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from ipr_lightning.envs.base import ParsedOutput, TextEnv
from ipr_lightning.envs.intercode_sql import SQL_ACTION_END  # noqa: F401 - re-exported
from ipr_lightning.envs.intercode_sql.backends import QueryResult, Session
from ipr_lightning.envs.intercode_sql.reward import Row, intercode_reward

# The paper's (IPR's) InterCode-SQL instruction, word for word (typos included).
INSTRUCTION = (
    "You are a helpful assistant assigned with the task of problem-solving. To achieve this, "
    "you will interact with a MySQL Database system using SQL queries to answer a question.\n"
    "At each turn, you should first provide your step-by-step thinking for solving the task. "
    'Your thought process should start with "Thought: ", for example: Thought: I should write '
    "a SQL query that gets the average GNP and total population from nations whose government "
    "is US territory.\nAfter that, you have two options:\n1) Interact with a mysql programming "
    "environment and receive the corresponding output. Your code should start with "
    '"Action: " and should be surrounded with ```sql ``` tag, for example: Action: \\n```sql\\n'
    "SELECT AVG(GNP), SUM(population) FROM nations WHERE government = 'US Territory'\\n```\n"
    "2) Directly submit the result, for example: Action: submit.\nYou should use this format: "
    '"Thought: your thought\\nAction: \\n```sql\\n<the mysql command>\\n```". You will receive '
    "the corresponding output for your sql command.\nYour output should contain only one "
    '"Action" part.\nThe "Action" part should be executed with a mysql interpreter or propose '
    "an answer. Any natural language in it should be commented out.\nThe SQL query and submit "
    "parts can not appear in your output simutaneously."
)
INVALID_OBSERVATION = (
    "Your action was not understood. To run a query, answer with\nAction: \n```sql\n"
    "<one MySQL statement>\n```\nand to hand in the result of your last query, with\n"
    "Action: submit"
)
_CODE_BLOCK = re.compile(r"`{3}[ \t]*(?:my)?(?:sql)?[ \t]*\n?([\s\S]*?)`{3}", re.IGNORECASE)
_SUBMIT = re.compile(r"submit\W*$", re.IGNORECASE)


@dataclass(frozen=True)
class SqlTask:
    id: str
    db: str
    question: str
    gold: str
    hardness: str = "unknown"


class SqlBackend(Protocol):
    name: str

    def databases(self) -> list[str]: ...

    def open(self, db: str) -> Session: ...


def sql_of(action: str) -> str | None:
    """The statement(s) inside the action's ```sql block (all lines), or None."""
    m = _CODE_BLOCK.search(action)
    return m.group(1).strip() if m and m.group(1).strip() else None


def format_result(result: QueryResult, max_rows: int = 30, max_chars: int = 2000) -> str:
    """The observation of one query: rows as Python tuples (summarised), or the error."""
    if result.rows is None:
        return f"Error executing query: {result.error}"
    rows = result.rows
    shown = min(len(rows), max_rows)
    while shown > 1 and len(repr(rows[:shown])) > max_chars:
        shown = shown * 3 // 4
    text = repr(rows[:shown])
    if shown < len(rows):
        text = f"{text[:-1]}, ...] ({len(rows)} rows in all; the first {shown} are shown)"
    return text


class IntercodeSqlEnv(TextEnv):
    instruction = INSTRUCTION
    invalid_observation = INVALID_OBSERVATION

    def __init__(
        self,
        tasks: dict[str, SqlTask],
        backend: SqlBackend,
        max_turns: int = 10,
        observation_rows: int = 30,
        observation_chars: int = 2000,
        gold_cache: dict[str, QueryResult] | None = None,
        reward_mode: str = "intercode",
    ) -> None:
        super().__init__()
        if reward_mode not in ("intercode", "canonical"):
            raise ValueError(f"reward_mode must be intercode or canonical, got {reward_mode!r}")
        self.tasks, self.backend, self.max_turns = tasks, backend, max_turns
        self.observation_rows, self.observation_chars = observation_rows, observation_chars
        self.reward_mode = reward_mode
        self.gold_cache = {} if gold_cache is None else gold_cache
        """The gold query's result per task id; may be shared by envs of one backend."""
        self._session: Session | None = None
        self._last: QueryResult | None = None

    def task_ids(self) -> list[str]:
        return list(self.tasks)

    def to_action(self, parsed: ParsedOutput) -> str | None:
        return parsed.action  # the whole block: multi-line SQL runs whole

    def _reset(self, task_id: str) -> tuple[str, dict[str, Any]]:
        if task_id not in self.tasks:
            raise KeyError(f"unknown InterCode-SQL task id {task_id!r}")
        self.close()  # one connection per episode: nothing carries over
        task = self.tasks[task_id]
        self._session, self._last = self.backend.open(task.db), None
        return task.question, {"db": task.db, "hardness": task.hardness}

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        assert self._session is not None and self.task_id is not None
        if _SUBMIT.match(action):
            gold = self.gold_result(self.task_id).scored_rows(self.reward_mode)
            last = None if self._last is None else self._last.scored_rows(self.reward_mode)
            reward = intercode_reward(last, gold, self.reward_mode)
            self.close()
            return f"Submitted. Reward: {reward}", reward, True, {"reward": reward}
        sql = sql_of(action)
        if sql is None:
            return self.invalid_observation, 0.0, False, {}
        self._last = self._session.run(sql)
        obs = format_result(self._last, self.observation_rows, self.observation_chars)
        return obs, 0.0, False, {"sql_error": self._last.error is not None}

    @property
    def last_rows(self) -> list[Row] | None:
        """Rows of the episode's last query (None: it failed, or none ran): what submit scores."""
        return None if self._last is None else self._last.rows

    def table_names(self) -> list[str]:
        """Tables of the current episode's database (not a turn: for the scripted expert)."""
        assert self._session is not None, "call reset() first"
        return [str(row[0]) for row in self._session.run("SHOW TABLES").rows or []]

    def gold_result(self, task_id: str) -> QueryResult:
        """The gold query's result (run once per task, then cached)."""
        if task_id not in self.gold_cache:
            task = self.tasks[task_id]
            session = self._session or self.backend.open(task.db)
            result = session.run(task.gold)
            if session is not self._session:
                session.close()
            self.gold_cache[task_id] = result
        return self.gold_cache[task_id]

    def gold_rows(self, task_id: str) -> list[Row] | None:
        """Canonical gold rows (None: the gold query fails on this backend)."""
        return self.gold_result(task_id).rows

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
