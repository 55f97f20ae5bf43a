"""InterCode-SQL's MySQL dump of the 20 Spider-dev databases, as read-only SQLite files.

`parse_dump` reads the mysqldump text shipped in `intercode-bench` without a server:
`CREATE DATABASE`/`USE`, `CREATE TABLE` (columns, keys) and multi-row `INSERT`s with MySQL's
string escapes. Comments, `/*!...*/`, SET/LOCK/DROP and the `CREATE USER`/`GRANT` block are
skipped; any other statement is an error. `sqlite_databases` converts it once per dump
(sha256) into a cache folder: `<db>.sqlite` files plus `schema.json` (MariaDB's `DESCRIBE`
rows). Types are mapped so results match MariaDB's (utf8mb4_general_ci): integers ->
INTEGER, float/double/decimal -> REAL, character types -> TEXT COLLATE MYSQL_CI (case,
accents and trailing spaces ignored, as utf8mb4_general_ci with PAD SPACE does; every
connection must register it: `connect_sqlite`), dates stay the dumped TEXT, binary -> BLOB;
foreign keys are dropped.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import re
import shutil
import sqlite3
import tempfile
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

INTERCODE_DUMP = "intercode/assets/datasets/spider_dev.sql"  # relative to site-packages

_TOKEN_RE = re.compile(
    r"""(?P<ws>\s+)
    |(?P<comment>--(?=\s|\Z)[^\n]*|\#[^\n]*|/\*.*?\*/)
    |(?P<str>'(?:[^'\\]++|\\.|'')*+'|"(?:[^"\\]++|\\.|"")*+")
    |(?P<ident>`(?:[^`]++|``)*+`)
    |(?P<num>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?![\w$]))
    |(?P<word>[A-Za-z_$0-9][\w$]*)
    |(?P<bad>['"`]|/\*)
    |(?P<punct>.)""",
    re.VERBOSE | re.DOTALL,
)
# MySQL string escapes; `\%` and `\_` keep their backslash (LIKE wildcards).
_ESCAPES = dict(zip("0bnrtZ%_", ["\0", "\b", "\n", "\r", "\t", "\x1a", "\\%", "\\_"], strict=True))
_ESCAPE_RE = {q: re.compile(rf"\\(.)|{q}{q}", re.DOTALL) for q in "'\""}
_IGNORED = {"SET", "LOCK", "UNLOCK", "DROP", "GRANT", "FLUSH", "ALTER", "START", "COMMIT"}
_NOW = ("CURRENT_TIMESTAMP", "NOW", "LOCALTIMESTAMP")
# MariaDB's default display widths (signed, unsigned): DESCRIBE shows `int` as `int(11)`.
_INT_WIDTHS = {"int": (11, 10), "bigint": (20, 20), "smallint": (6, 5), "tinyint": (4, 3)}
_INT_WIDTHS["mediumint"] = (9, 8)
# Bumped when the conversion changes: a new cache folder, old ones are never reused.
FORMAT_VERSION = 2
COLLATION = "MYSQL_CI"
# SQLite column affinity per MySQL type; char/varchar/*text/enum/set and any other type get
# TEXT COLLATE MYSQL_CI (MySQL's case-insensitive _ci collation).
_AFFINITY = dict.fromkeys(
    "int integer bigint smallint tinyint mediumint year bit".split(), "INTEGER"
)
_AFFINITY |= dict.fromkeys("float double real decimal dec numeric fixed".split(), "REAL")
_AFFINITY |= dict.fromkeys("date datetime timestamp time".split(), "TEXT")
_AFFINITY |= dict.fromkeys("blob tinyblob mediumblob longblob binary varbinary".split(), "BLOB")


CACHED_KEY_CHARS = 256
"""Collation keys of strings up to this long are cached (bounded: at most 2^15 entries of
at most this size); longer strings, which the data never holds, are keyed every time."""


def mysql_ci_key(text: str) -> str:
    """utf8mb4_general_ci, closely: case and accents ignored, trailing spaces too (PAD SPACE)."""
    return _cached_key(text) if len(text) <= CACHED_KEY_CHARS else _key(text)


def _key(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.rstrip(" "))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


_cached_key = functools.lru_cache(maxsize=1 << 15)(_key)  # every comparison of a sort or join


def _mysql_ci(a: str, b: str) -> int:
    ka, kb = mysql_ci_key(a), mysql_ci_key(b)
    return (ka > kb) - (ka < kb)


def connect_sqlite(database: str, **kwargs: Any) -> sqlite3.Connection:
    """`sqlite3.connect` with the MYSQL_CI collation the converted tables use."""
    con = sqlite3.connect(database, **kwargs)
    con.create_collation(COLLATION, _mysql_ci)
    return con


def intercode_asset(relative: str) -> Path:
    """A data file of the intercode-bench package (`relative` to site-packages), located
    without importing `intercode` (its `__init__` pulls in docker and friends)."""
    spec = importlib.util.find_spec("intercode")
    for location in (spec and spec.submodule_search_locations) or []:
        if (path := Path(location).parent / relative).is_file():
            return path
    hint = "pip install --no-deps intercode-bench==0.1.22"
    raise FileNotFoundError(f"InterCode's {Path(relative).name} not found: `{hint}`")


def default_dump_path() -> Path:
    """The Spider-dev dump shipped in intercode-bench."""
    return intercode_asset(INTERCODE_DUMP)


@dataclass(frozen=True)
class Column:
    name: str
    mysql_type: str  # as written in the dump, e.g. "int", "varchar(255)", "decimal(10,2)"
    nullable: bool
    default: str | None  # the DEFAULT literal as text; None when absent or NULL
    extra: str  # "auto_increment" or ""


@dataclass
class Table:
    name: str
    columns: list[Column]
    primary_key: list[str]
    keys: set[str]  # leading columns of KEY / UNIQUE KEY / FOREIGN KEY indexes
    rows: list[tuple]  # Python values: int, float, str, None
    unique: set[str] = field(default_factory=set)  # columns with a one-column UNIQUE index


class _Statement:
    """Cursor over one statement's tokens (kind, text, offset) for the recursive parsers."""

    def __init__(self, tokens: list[tuple[str, str, int]], text: str, source: str) -> None:
        self.tokens, self.text, self.source, self.i = tokens, text, source, 0

    def error(self, why: str) -> ValueError:
        start = self.tokens[0][2]
        line, head = self.text.count("\n", 0, start) + 1, self.text[start : start + 60]
        head = " ".join(head.split())
        return ValueError(f"{self.source}:{line}: cannot parse statement ({why}): {head!r}")

    def done(self) -> bool:
        return self.i >= len(self.tokens)

    def peek(self) -> str:  # upper-cased text of the next token ("" at the end)
        return "" if self.done() else self.tokens[self.i][1].upper()

    def take(self) -> tuple[str, str, int]:
        if self.done():
            raise self.error("unexpected end")
        self.i += 1
        return self.tokens[self.i - 1]

    def expect(self, word: str) -> None:
        if self.take()[1].upper() != word:
            raise self.error(f"expected {word}")

    def accept(self, *words: str) -> bool:  # consumes `words` if they come next
        ok = [t[1].upper() for t in self.tokens[self.i : self.i + len(words)]] == list(words)
        self.i += len(words) if ok else 0
        return ok

    def name(self) -> str:
        kind, text, _ = self.take()
        if kind in ("ident", "word"):
            return text[1:-1].replace("``", "`") if kind == "ident" else text
        raise self.error(f"expected a name, got {text!r}")

    def group(self) -> list[tuple[str, str, int]]:
        """The tokens inside the parenthesised group that comes next (parentheses consumed)."""
        self.expect("(")
        start, depth = self.i, 1
        while depth:
            depth += {"(": 1, ")": -1}.get(self.take()[1], 0)
        return self.tokens[start : self.i - 1]

    def sub(self, tokens: list[tuple[str, str, int]]) -> _Statement:
        return _Statement(tokens, self.text, self.source)


def _statements(text: str, source: str) -> list[_Statement]:
    """Split the dump into statements at top-level `;`, dropping whitespace and comments."""
    statements, tokens = [], []
    for match in _TOKEN_RE.finditer(text + "\n;"):  # a final `;` ends the last statement
        kind, value = match.lastgroup or "", match.group()
        if kind == "bad":
            line, head = text.count("\n", 0, match.start()) + 1, text[match.start() :][:40]
            raise ValueError(f"{source}:{line}: unterminated {value!r}: {head!r}")
        if kind in ("ws", "comment"):
            continue
        if value == ";":
            if tokens:
                statements.append(_Statement(tokens, text, source))
            tokens = []
        else:
            tokens.append((kind, value, match.start()))
    return statements


def _unquote(literal: str) -> str:
    """A MySQL string literal's value: backslash escapes and doubled quotes."""
    quote, body = literal[0], literal[1:-1]
    unescape = lambda m: quote if m[1] is None else _ESCAPES.get(m[1], m[1])  # noqa: E731
    return _ESCAPE_RE[quote].sub(unescape, body)


def _value(st: _Statement, raw: bool = False) -> int | float | str | None:
    """One literal of a VALUES tuple; with `raw`, a number keeps its spelling ("0.00")."""
    kind, text, _ = st.take()
    sign = ""
    if text in ("-", "+") and kind == "punct":
        sign, (kind, text, _) = text.replace("+", ""), st.take()
    if kind == "num":
        return sign + text if raw else (float if set(".eE") & set(text) else int)(sign + text)
    if kind == "str" and not sign:
        return _unquote(text)
    if kind == "word" and not sign and text.upper() in ("NULL", "TRUE", "FALSE"):
        return {"NULL": None, "TRUE": 1, "FALSE": 0}[text.upper()]
    raise st.error(f"unsupported value {text!r}")


def _items(st: _Statement, item: Callable[[_Statement], Any]) -> list:
    """The comma-separated `item`s in the parenthesised group that comes next."""
    inner, items = st.sub(st.group()), []
    while not inner.done():
        items.append(item(inner))
        if not inner.done():
            inner.expect(",")
    return items


def _key_part(st: _Statement) -> str:
    """One column of an index: `name`, `name`(255), `name` DESC."""
    name = st.name()
    if st.peek() == "(":
        st.group()  # prefix length
    st.accept("ASC") or st.accept("DESC")
    return name


def _column(st: _Statement, table: Table) -> None:
    """A column definition, appended to `table` (inline PRIMARY KEY / UNIQUE included)."""
    name, mysql_type = st.name(), st.name()
    if st.peek() == "(":
        mysql_type += f"({''.join(t[1] for t in st.group())})"
    while st.peek() in ("UNSIGNED", "SIGNED", "ZEROFILL"):
        mysql_type += " " + st.take()[1].lower()
    nullable, default, extra = True, None, ""
    while not st.done():
        if st.accept("NOT", "NULL"):
            nullable = False
        elif st.accept("DEFAULT"):
            if st.peek() in _NOW:
                default = st.take()[1].upper()
                if st.peek() == "(":
                    st.group()
            else:
                value = _value(st, raw=True)
                default = None if value is None else str(value)
        elif st.accept("AUTO_INCREMENT"):
            extra = "auto_increment"
        elif st.accept("CHARACTER") or st.peek() in ("COLLATE", "CHARSET", "COMMENT"):
            st.i += 2  # CHARACTER SET x, COLLATE x, CHARSET x, COMMENT 'x'
        elif st.accept("PRIMARY", "KEY") or st.accept("KEY"):
            table.primary_key.append(name)
        elif st.accept("UNIQUE"):
            st.accept("KEY")
            table.unique.add(name)
            table.keys.add(name)
        elif not st.accept("NULL"):
            raise st.error(f"unsupported column attribute {st.peek()!r}")
    table.columns.append(Column(name, mysql_type, nullable, default, extra))


def _index(st: _Statement, table: Table) -> bool:
    """A table-level PRIMARY KEY / KEY / UNIQUE / FOREIGN KEY definition; False when the
    definition is a column instead."""
    if st.accept("CONSTRAINT") and st.peek() not in ("PRIMARY", "UNIQUE", "FOREIGN"):
        st.name()
    word = st.peek()
    if word not in ("PRIMARY", "KEY", "INDEX", "UNIQUE", "FULLTEXT", "SPATIAL", "FOREIGN"):
        return False
    st.take()
    if word in ("PRIMARY", "FOREIGN"):
        st.expect("KEY")
    elif word != "KEY":
        st.accept("KEY") or st.accept("INDEX")
    if st.peek() != "(":
        st.name()  # index name
    columns = _items(st, _key_part)
    if word == "PRIMARY":
        table.primary_key.extend(columns)
        return True
    if word == "UNIQUE" and len(columns) == 1:
        table.unique.add(columns[0])
    table.keys.add(columns[0])
    return True


def _create_table(st: _Statement) -> Table:
    st.accept("IF", "NOT", "EXISTS")
    table = Table(st.name(), [], [], set(), [])
    body = st.sub(st.group())
    while not body.done():
        start, depth = body.i, 0
        while not body.done() and (depth or body.peek() != ","):
            depth += {"(": 1, ")": -1}.get(body.take()[1], 0)
        definition = body.sub(body.tokens[start : body.i])
        body.accept(",")
        if not definition.tokens:
            raise body.error("empty table element")
        if not _index(definition, table):
            _column(definition, table)
    table.columns = [  # primary key columns are NOT NULL even when not written so
        replace(c, nullable=False) if c.name in table.primary_key else c for c in table.columns
    ]
    return table


def _insert(st: _Statement, tables: list[Table]) -> None:
    st.accept("IGNORE")
    st.expect("INTO")
    name = st.name()
    table = next((t for t in tables if t.name.lower() == name.lower()), None)
    if table is None:
        raise st.error(f"INSERT into unknown table {name!r}")
    if not st.accept("VALUES") and not st.accept("VALUE"):
        raise st.error("only INSERT ... VALUES without a column list is supported")
    while True:
        values = _items(st, _value)
        if len(values) != len(table.columns):
            raise st.error(f"{len(values)} values for {len(table.columns)} columns")
        table.rows.append(tuple(values))
        if st.done():
            return
        st.expect(",")


def parse_dump(text: str, source: str = "<dump>") -> dict[str, list[Table]]:
    """Database name -> its tables in dump order. Raises ValueError ("source:line: ...") on a
    statement it cannot parse or does not know."""
    databases: dict[str, list[Table]] = {}
    current: str | None = None
    for st in _statements(text, source):
        verb = st.take()[1].upper()
        if verb in _IGNORED or (verb == "CREATE" and st.peek() == "USER"):
            continue
        if verb == "CREATE" and st.accept("DATABASE"):
            st.accept("IF", "NOT", "EXISTS")
            databases.setdefault(st.name(), [])
        elif verb == "USE":
            current = st.name()
            databases.setdefault(current, [])
        elif verb not in ("CREATE", "INSERT"):
            raise st.error(f"unsupported statement {verb}")
        elif current is None:
            raise st.error("no database selected (USE) yet")
        elif verb == "INSERT":
            _insert(st, databases[current])
        else:
            st.expect("TABLE")
            databases[current].append(_create_table(st))
    return databases


def describe_rows(table: Table) -> list[tuple]:
    """What MariaDB's `DESCRIBE t` shows: (Field, Type, Null, Key, Default, Extra) per column.
    Types are MariaDB's spelling: integer types get their display width (`int` -> `int(11)`)."""
    rows = []
    for col in table.columns:
        base, space, rest = col.mysql_type.lower().replace("integer", "int").partition(" ")
        if base in _INT_WIDTHS:
            base = f"{base}({_INT_WIDTHS[base]['unsigned' in rest]})"
        mysql_type = {"decimal": "decimal(10,0)", "year": "year(4)"}.get(base, base) + space + rest
        key = "UNI" if col.name in table.unique else "MUL" if col.name in table.keys else ""
        key = "PRI" if col.name in table.primary_key else key
        default = "current_timestamp()" if col.default in _NOW else col.default
        null = "YES" if col.nullable else "NO"
        rows.append((col.name, mysql_type, null, key, default, col.extra))
    return rows


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _write_sqlite(path: Path, tables: list[Table]) -> None:
    con = connect_sqlite(str(path))
    try:
        with con:  # one transaction
            for table in tables:
                parts = []
                for col in table.columns:
                    affinity = _AFFINITY.get(re.split(r"[ (]", col.mysql_type.lower())[0])
                    affinity = affinity or f"TEXT COLLATE {COLLATION}"  # char, text, enum, unknown
                    null = "" if col.nullable else " NOT NULL"
                    parts.append(f"{_quote(col.name)} {affinity}{null}")
                if table.primary_key:
                    parts.append(f"PRIMARY KEY ({', '.join(map(_quote, table.primary_key))})")
                con.execute(f"CREATE TABLE {_quote(table.name)} ({', '.join(parts)})")
                marks = ", ".join("?" * len(table.columns))
                con.executemany(f"INSERT INTO {_quote(table.name)} VALUES ({marks})", table.rows)
        con.execute("PRAGMA journal_mode=DELETE")
    finally:
        con.close()


def sqlite_databases(dump_path: Path, cache_dir: Path) -> Path:
    """Convert the dump once into `<cache_dir>/sqlite-v<FORMAT_VERSION>-<sha256[:16]>/` (one
    `<db>.sqlite` per database, `schema.json` with DESCRIBE rows, `COMPLETE` written last) and
    return it. Built in a temporary sibling and renamed into place, so a folder is only ever
    seen complete."""
    data = Path(dump_path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:16]
    final = Path(cache_dir) / f"sqlite-v{FORMAT_VERSION}-{digest}"
    if (final / "COMPLETE").is_file():
        return final
    databases = parse_dump(data.decode("utf-8"), source=str(dump_path))
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        schema = {}
        for db, tables in databases.items():
            _write_sqlite(tmp / f"{db}.sqlite", tables)
            schema[db] = {t.name: [list(r) for r in describe_rows(t)] for t in tables}
        (tmp / "schema.json").write_text(json.dumps(schema, indent=1))
        (tmp / "COMPLETE").write_text(f"{dump_path}\n")
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / "COMPLETE").is_file():  # not a rival's finished build
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after a successful replace
    return final
