"""Read-only SQL sessions for the InterCode-SQL env: MariaDB/MySQL and embedded SQLite.

    backend = SqliteBackend(sqlite_databases(default_dump_path(), cache), SqlLimits())
    session = backend.open("museum_visit")      # one session (connection) per episode
    session.run("SELECT count(*) FROM museum")  # -> QueryResult(rows=[(8,)])

Agent SQL can't change or damage anything, by several independent walls:
1. `check_statement`: exactly one statement, starting with SELECT, WITH, SHOW, DESC(RIBE)
   or EXPLAIN; no MySQL executable comments (`/*! ... */`); `; DROP ...` is two statements.
2. The connection itself is read-only: MariaDB's agent user has only SELECT/SHOW VIEW
   (`envs/sql_server.py`); SQLite files are opened `mode=ro` with `query_only` and an
   authorizer that allows nothing but reads (no ATTACH, no PRAGMA, no writes, no
   fts3_tokenizer/load_extension), in a worker process with a capped address space.
3. A statement timeout (MariaDB: `max_statement_time`, MySQL: `max_execution_time`, both
   set for the session and unreachable by the agent, who can't run SET; SQLite: a progress
   handler, and a worker process killed when one instruction outlasts it, `sql_worker`), a
   client read timeout behind it, and result caps: more than `max_rows` rows or `max_bytes`
   bytes is an error observation, read without loading the whole result.
Failures come back as `QueryResult(error=...)`, never as exceptions.

SQLite can't run MySQL's SHOW/DESCRIBE: the backend answers `SHOW TABLES`, `SHOW
DATABASES`, `SHOW COLUMNS FROM t` and `DESC[RIBE] t` from the dump's schema, as MariaDB
would (lower-case table names, as with `lower_case_table_names=1`).
"""

from __future__ import annotations

import itertools
import json
import re
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ipr_lightning.envs.intercode_sql.reward import Row, canonical_row
from ipr_lightning.envs.intercode_sql.worker import SqliteWorker, fetch_capped

_SESSION_IDS = itertools.count()

READ_STATEMENTS = ("select", "with", "show", "desc", "describe", "explain")


@dataclass(frozen=True)
class SqlLimits:
    timeout_s: float = 5.0
    """Statement time limit."""
    max_rows: int = 10_000
    """A result with more rows is refused (error observation)."""
    max_bytes: int = 4_000_000
    """A result with more bytes (text and blob lengths, 8 per other value) is refused; no
    single value may be larger either (SQLite)."""
    memory_bytes: int = 1 << 30
    """Address space of the SQLite worker process (0: unlimited)."""


@dataclass(frozen=True)
class QueryResult:
    rows: list[Row] | None
    """Canonical result rows (`sql_reward.canonical_row`); None on error."""
    error: str | None = None
    raw: list[Row] | None = None
    """The rows as the database driver returned them (InterCode's reward compares these);
    unset: the same as `rows`."""

    def __post_init__(self) -> None:
        if self.raw is None:
            object.__setattr__(self, "raw", self.rows)

    def scored_rows(self, mode: str) -> list[Row] | None:
        """The rows the reward compares under `env.options.reward` = `mode`."""
        return self.raw if mode == "intercode" else self.rows


def split_statements(sql: str) -> list[str]:
    """Statements of `sql`, split at `;` outside quotes and comments (comments kept)."""
    statements, start, i, n = [], 0, 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"`":
            i += 1
            while i < n and sql[i] != c:
                i += 2 if sql[i] == "\\" and c != "`" else 1
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 1
        elif c == "#" or (sql.startswith("--", i) and (i + 2 == n or sql[i + 2].isspace())):
            end = sql.find("\n", i)
            i = n if end < 0 else end
        elif c == ";":
            statements.append(sql[start:i])
            start = i + 1
        i += 1
    statements.append(sql[start:])
    return [s.strip() for s in statements if _strip_comments(s).strip()]


def _strip_comments(sql: str) -> str:
    return re.sub(r"/\*.*?\*/|(?:--\s|#)[^\n]*", " ", sql, flags=re.DOTALL)


def check_statement(sql: str) -> str | None:
    """Why `sql` may not run (one line), or None if it is one read statement."""
    if re.search(r"/\*[!M]", sql):
        return "executable comments (/*! ... */) are not allowed"
    statements = split_statements(sql)
    if not statements:
        return "empty query"
    if len(statements) > 1:
        return f"one statement per action ({len(statements)} given)"
    first = re.match(r"[\s(]*([A-Za-z]+)", _strip_comments(statements[0]))
    if first is None or first.group(1).lower() not in READ_STATEMENTS:
        return "the database is read-only: only SELECT, WITH, SHOW, DESCRIBE and EXPLAIN may run"
    return None


class Session:
    """One episode's connection. `run` never raises for anything the agent writes."""

    def __init__(self, db: str, limits: SqlLimits) -> None:
        self.db, self.limits = db, limits

    def run(self, sql: str) -> QueryResult:
        refused = check_statement(sql)
        if refused is not None:
            return QueryResult(None, refused)
        statement = split_statements(sql)[0]
        return self._execute(statement)

    def _execute(self, statement: str) -> QueryResult:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


# -- SQLite --------------------------------------------------------------------------------

_SHOW_COLUMNS = re.compile(
    r"^(?:desc|describe|show\s+(?:columns|fields)\s+(?:from|in))\s+[`\"]?(\w+)[`\"]?$", re.I
)


class SqliteSession(Session):
    """Statements run in the backend's worker process (`sql_worker`): read-only connection,
    progress handler, result caps, and a kill when one instruction outlasts the limit."""

    def __init__(
        self, path: Path, schema: dict[str, list[list]], limits: SqlLimits, worker: SqliteWorker
    ) -> None:
        super().__init__(path.stem, limits)
        self.path, self.worker = path, worker
        self.schema = {name.lower(): rows for name, rows in schema.items()}
        self.sid = next(_SESSION_IDS)

    def _execute(self, statement: str) -> QueryResult:
        text = " ".join(_strip_comments(statement).split())
        if re.match(r"show\s|desc(ribe)?\s", text, re.I):
            return self._show(text)
        lim = self.limits
        status, value = self.worker.run(
            self.sid, self.path, statement, lim.timeout_s, lim.max_rows, lim.max_bytes
        )
        if status != "ok":
            return QueryResult(None, value)
        rows = [tuple(r) for r in value]
        return QueryResult([canonical_row(r) for r in rows], raw=rows)

    def _show(self, text: str) -> QueryResult:
        if re.fullmatch(r"show\s+tables", text, re.I):
            return QueryResult([(name,) for name in sorted(self.schema)])
        if re.fullmatch(r"show\s+databases", text, re.I):
            return QueryResult([(self.db,)])
        m = _SHOW_COLUMNS.match(text)
        if m is None:
            return QueryResult(
                None,
                "the SQLite backend answers SHOW TABLES, SHOW DATABASES, SHOW COLUMNS FROM t "
                "and DESCRIBE t only",
            )
        rows = self.schema.get(m.group(1).lower())
        if rows is None:
            return QueryResult(None, f"Table '{self.db}.{m.group(1)}' doesn't exist")
        return QueryResult([tuple(r) for r in rows])

    def close(self) -> None:
        self.worker.close_session(self.sid)


class SqliteBackend:
    """The databases of a MySQL dump as read-only SQLite files (`sql_dump.sqlite_databases`)."""

    name = "sqlite"

    def __init__(self, folder: Path, limits: SqlLimits) -> None:
        self.folder, self.limits = Path(folder), limits
        self.schema: dict[str, dict[str, list[list]]] = json.loads(
            (self.folder / "schema.json").read_text()
        )
        self.worker = SqliteWorker(limits.memory_bytes)  # its process starts on first use
        weakref.finalize(self, self.worker.stop)

    def databases(self) -> list[str]:
        return list(self.schema)

    def open(self, db: str) -> SqliteSession:
        names = {name.lower(): name for name in self.schema}  # MariaDB: lower_case_table_names
        if db.lower() not in names:
            raise KeyError(f"database {db!r} is not in {self.folder}")
        name = names[db.lower()]
        path = self.folder / f"{name}.sqlite"
        return SqliteSession(path, self.schema[name], self.limits, self.worker)


# -- MariaDB / MySQL -----------------------------------------------------------------------


@dataclass(frozen=True)
class ServerAddress:
    host: str
    port: int
    user: str
    password: str


class MySQLSession(Session):
    def __init__(self, address: ServerAddress, db: str, limits: SqlLimits) -> None:
        super().__init__(db, limits)
        self.address = address
        self._conn: Any = None
        self._connect()  # fail early (bad address, unknown database): a setup error

    def _connect(self) -> None:
        import pymysql

        a = self.address
        conn = pymysql.connect(
            host=a.host,
            port=a.port,
            user=a.user,
            password=a.password,
            database=self.db,
            charset="utf8mb4",
            connect_timeout=10,
            read_timeout=self.limits.timeout_s + 10,  # behind the server-side limit
            cursorclass=pymysql.cursors.SSCursor,  # rows are read as needed: the cap holds
        )
        with conn.cursor() as cursor:  # our own SET: agents can't run one
            if "mariadb" in conn.get_server_info().lower():
                cursor.execute(f"SET SESSION max_statement_time = {self.limits.timeout_s:g}")
            else:
                cursor.execute(
                    f"SET SESSION max_execution_time = {self.limits.timeout_s * 1000:.0f}"
                )
        self._conn = conn

    def _execute(self, statement: str) -> QueryResult:
        import pymysql

        if self._conn is None:
            self._connect()
        cursor = self._conn.cursor()
        try:
            cursor.execute(statement)
            rows, refused = [], None
            if cursor.description is not None:
                rows, refused = fetch_capped(cursor, self.limits.max_rows, self.limits.max_bytes)
            if refused:
                self._kill_query()  # stop the server instead of reading every row
                return QueryResult(None, refused)
        except pymysql.err.MySQLError as exc:
            code = exc.args[0] if exc.args else None
            if code in (2006, 2013) or not self._conn.open:  # lost: the client timeout
                self._conn = None
                return QueryResult(None, f"statement timed out after {self.limits.timeout_s} s")
            return QueryResult(None, str(exc.args[1]) if len(exc.args) > 1 else str(exc))
        finally:
            self._close_cursor(cursor)
        return QueryResult([canonical_row(r) for r in rows], raw=list(rows))

    def _kill_query(self) -> None:
        """KILL QUERY on this session's statement, from a second connection (users may kill
        their own statements): the rest of the result is never sent."""
        import pymysql

        a = self.address
        with (
            pymysql.connect(
                host=a.host, port=a.port, user=a.user, password=a.password, connect_timeout=10
            ) as killer,
            killer.cursor() as cursor,
        ):
            cursor.execute(f"KILL QUERY {int(self._conn.thread_id())}")

    def _close_cursor(self, cursor: Any) -> None:
        import pymysql

        try:
            cursor.close()  # reads what is left of the result
        except (pymysql.err.MySQLError, OSError, AttributeError):
            self.close()  # unusable now: the next statement reconnects

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - already broken: nothing to release
                pass
            self._conn = None


class MySQLBackend:
    """A running MariaDB/MySQL server holding the databases (e.g. `ipr-data sql server`)."""

    name = "mysql"

    def __init__(self, address: ServerAddress, limits: SqlLimits) -> None:
        self.address, self.limits = address, limits
        self._databases: list[str] | None = None

    def databases(self) -> list[str]:
        if self._databases is None:
            session = MySQLSession(self.address, "information_schema", self.limits)
            result = session.run("SHOW DATABASES")
            session.close()
            system = {"information_schema", "mysql", "performance_schema", "sys"}
            self._databases = [r[0] for r in result.rows or [] if r[0] not in system]
        return self._databases

    def open(self, db: str) -> MySQLSession:
        return MySQLSession(self.address, db, self.limits)
