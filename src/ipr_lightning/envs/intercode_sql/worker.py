"""Agent SQL on SQLite, in a child process that the parent can kill.

SQLite's progress handler stops a statement between virtual-machine instructions, but one
instruction can run for seconds: `printf('%.*c', 2000000000, 'x')` loops inside a single
call, and a sort compares strings through our Python collation inside a single instruction.
Only a clock outside the statement stops those, so every agent statement runs here:

    worker = SqliteWorker(memory_bytes=1 << 30)
    worker.run(session_id, path, "SELECT ...", limits)  # -> QueryResult, within timeout + 1 s

The parent waits `timeout_s + GRACE_S` for the answer, then kills the process and answers
with a timeout error; the next statement starts a fresh one (sessions are read-only, so a
connection is reopened without losing anything). The child's address space is capped
(`RLIMIT_AS`): a statement that needs more memory fails there with "out of memory" instead
of growing the trainer. Requests and answers are `marshal` frames over the child's
stdin/stdout (SQLite values are None, int, float, str and bytes).
"""

from __future__ import annotations

import marshal
import os
import select
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

GRACE_S = 1.0
"""How long past its time limit a statement may run before the process is killed."""
_HEADER = struct.Struct("<Q")

_SQLITE_READS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION}
_SQLITE_READS.add(getattr(sqlite3, "SQLITE_RECURSIVE", 33))
_SQLITE_DENIED_FUNCTIONS = {"fts3_tokenizer", "load_extension"}
"""Functions that read nothing of the database: fts3_tokenizer returns a native pointer."""


def row_bytes(row: tuple) -> int:
    """A result row's size as the result cap counts it: text and blob lengths, 8 otherwise."""
    return sum(len(v) if isinstance(v, str | bytes) else 8 for v in row)


def fetch_capped(cursor: Any, max_rows: int, max_bytes: int) -> tuple[list[tuple], str | None]:
    """Rows of an executed cursor, read one at a time: (rows, None), or (rows so far, why
    the result is refused) as soon as it passes `max_rows` rows or `max_bytes` bytes."""
    rows: list[tuple] = []
    size = 0
    for row in cursor:
        rows.append(row)
        size += row_bytes(row)
        if len(rows) > max_rows:
            return rows, f"the result has more than {max_rows} rows; narrow the query"
        if size > max_bytes:
            return rows, f"the result is larger than {max_bytes} bytes; narrow the query"
    return rows, None


def _authorize(action: int, arg1: Any = None, arg2: Any = None, *args: Any) -> int:
    if action == sqlite3.SQLITE_FUNCTION and str(arg2).lower() in _SQLITE_DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY  # for a function, arg2 is its name
    return sqlite3.SQLITE_OK if action in _SQLITE_READS else sqlite3.SQLITE_DENY


class _Connection:
    """One read-only connection: query_only, no ATTACH, reads only, values capped."""

    def __init__(self, path: str, max_bytes: int) -> None:
        from ipr_lightning.envs.intercode_sql.dump import connect_sqlite

        self.conn = connect_sqlite(f"file:{path}?mode=ro", uri=True)
        self.conn.execute("PRAGMA query_only = ON")
        self.conn.execute("PRAGMA temp_store = MEMORY")  # sorts spill under the memory cap
        self.conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        # no value larger than a whole result may be: no 1 GB strings on the way either
        self.conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max(1, min(max_bytes, 1_000_000_000)))
        self.conn.set_authorizer(_authorize)
        self.deadline = 0.0
        self.conn.set_progress_handler(lambda: time.monotonic() > self.deadline, 10_000)

    def execute(self, statement: str, timeout_s: float, max_rows: int, max_bytes: int) -> tuple:
        """("ok", rows) or ("error", message); never raises for what the agent wrote."""
        self.deadline = time.monotonic() + timeout_s
        try:
            cursor = self.conn.execute(statement)
            rows, refused = fetch_capped(cursor, max_rows, max_bytes)
            cursor.close()
        except sqlite3.OperationalError as exc:
            if str(exc) == "interrupted":
                return ("error", f"statement timed out after {timeout_s} s")
            return ("error", str(exc))
        except sqlite3.Error as exc:
            return ("error", str(exc))
        except UnicodeDecodeError as exc:  # from the collation or a fetched value
            return ("error", f"a text value is not valid UTF-8 ({exc.reason})")
        except MemoryError:
            return ("error", "out of memory: the statement needs too much; narrow the query")
        finally:
            self.deadline = time.monotonic() + timeout_s
        return ("error", refused) if refused else ("ok", rows)


def _read_frame(stream: Any) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    return marshal.loads(stream.read(_HEADER.unpack(header)[0]))


def _write_frame(stream: Any, obj: Any) -> None:
    data = marshal.dumps(obj)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def serve(memory_bytes: int) -> None:
    """The child: answer ("run", sid, path, sql, timeout_s, max_rows, max_bytes) and
    ("close", sid) requests until stdin closes (the parent has gone)."""
    if memory_bytes > 0:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    connections: dict[int, _Connection] = {}
    while (request := _read_frame(stdin)) is not None:
        if request[0] == "close":
            if (conn := connections.pop(request[1], None)) is not None:
                conn.conn.close()
            continue
        _, sid, path, statement, timeout_s, max_rows, max_bytes = request
        try:
            if sid not in connections:
                connections[sid] = _Connection(path, max_bytes)
            answer = connections[sid].execute(statement, timeout_s, max_rows, max_bytes)
        except MemoryError:
            answer = ("error", "out of memory: the statement needs too much; narrow the query")
        except sqlite3.Error as exc:
            answer = ("error", f"cannot open {Path(path).name}: {exc}")
        try:
            _write_frame(stdout, answer)
        except MemoryError:  # the answer itself did not fit
            _write_frame(stdout, ("error", "out of memory: the result is too large"))


class SqliteWorker:
    """The parent's handle on the child process (started on first use, restarted after a
    kill). One statement at a time."""

    def __init__(self, memory_bytes: int) -> None:
        self.memory_bytes = memory_bytes
        self._proc: subprocess.Popen | None = None
        self.kills = 0
        """Statements stopped by killing the process (their time limit passed)."""

    def _start(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            cmd = [
                sys.executable,
                "-m",
                "ipr_lightning.envs.intercode_sql.worker",
                str(self.memory_bytes),
            ]
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        return self._proc

    def run(
        self, sid: int, path: Path, statement: str, timeout_s: float, max_rows: int, max_bytes: int
    ) -> tuple:
        """("ok", rows) or ("error", message) within `timeout_s + GRACE_S` seconds."""
        proc = self._start()
        request = ("run", sid, str(path), statement, float(timeout_s), max_rows, max_bytes)
        try:
            _write_frame(proc.stdin, request)
            answer = self._answer(proc, time.monotonic() + timeout_s + GRACE_S)
        except (BrokenPipeError, EOFError, ValueError):
            answer = None
        if answer is not None:
            return answer
        timed_out = proc.poll() is None
        self.stop()
        if timed_out:
            self.kills += 1
            return ("error", f"statement timed out after {timeout_s} s")
        return ("error", "the statement stopped the database process; narrow the query")

    @staticmethod
    def _answer(proc: subprocess.Popen, deadline: float) -> Any:
        """The next frame from the child, or None if none came by `deadline` (or it died)."""
        fd = proc.stdout.fileno()
        data = b""
        need = _HEADER.size
        while len(data) < need:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, need - len(data))
            if not chunk:
                return None  # the child died
            data += chunk
            if need == _HEADER.size and len(data) == need:
                need += _HEADER.unpack(data)[0]
        return marshal.loads(data[_HEADER.size :])

    def close_session(self, sid: int) -> None:
        if self._proc is not None and self._proc.poll() is None:
            try:
                _write_frame(self._proc.stdin, ("close", sid))
            except (BrokenPipeError, ValueError):
                self.stop()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                try:
                    stream.close()
                except OSError:  # a broken pipe: nothing to flush
                    pass


if __name__ == "__main__":
    serve(int(sys.argv[1]))
