"""The private MariaDB of InterCode-SQL: Spider data loaded, a reader that can only read,
statements cut after the timeout (even when the reader lowers its own limit), loopback only,
stop and a fast restart that reuses the data.

The server is conftest's `mariadb_server`: skipped when MariaDB or intercode-bench is missing,
unless IPR_REQUIRE_MARIADB=1 (CI), where that is a failure."""

from __future__ import annotations

import getpass
import os
import time
from pathlib import Path

import pymysql
import pytest
from conftest import MARIADB_TIMEOUT

from ipr_lightning.envs.intercode_sql import server as sql_server
from ipr_lightning.envs.intercode_sql.dump import default_dump_path
from ipr_lightning.envs.intercode_sql.server import (
    READER_USER,
    ServerInfo,
    server_info,
    start_server,
    stop_server,
)

SPIDER_DATABASES = {
    "battle_death", "car_1", "concert_singer", "course_teach", "cre_doc_template_mgt",
    "dog_kennels", "employee_hire_evaluation", "flight_2", "museum_visit", "network_1",
    "orchestra", "pets_1", "poker_player", "real_estate_properties", "singer",
    "student_transcripts_tracking", "tvshow", "voter_1", "world_1", "wta_1",
}  # fmt: skip
SLOW_JOIN = "SELECT count(*) FROM world_1.city a, world_1.city b, world_1.city c"


@pytest.fixture
def server(mariadb_server: ServerInfo) -> ServerInfo:
    return mariadb_server


def reader(info: ServerInfo, **kwargs) -> pymysql.connections.Connection:
    kwargs.setdefault("database", "museum_visit")
    return pymysql.connect(
        host=info.host, port=info.port, user=info.user, password=info.password, **kwargs
    )


def admin(info: ServerInfo) -> pymysql.connections.Connection:
    user = "root" if os.geteuid() == 0 else getpass.getuser()
    return pymysql.connect(unix_socket=str(info.datadir / "mysqld.sock"), user=user)


def query(conn: pymysql.connections.Connection, sql: str) -> tuple:
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def museum_rows(info: ServerInfo) -> tuple:
    with admin(info) as conn:
        return query(conn, "SELECT * FROM museum_visit.museum ORDER BY Museum_ID")


def test_strip_account_statements() -> None:
    sql = (
        "-- TEST USER\nCREATE USER 'admin'@'%' IDENTIFIED BY 'admin'; \n"
        "GRANT ALL PRIVILEGES ON *.* TO 'admin'@'%'; \nFLUSH PRIVILEGES;\n\n"
        "CREATE DATABASE IF NOT EXISTS `a`;\nUSE `a`;\nINSERT INTO t VALUES ('GRANT x;');\n"
    )
    kept = sql_server.strip_account_statements(sql)
    assert "admin" not in kept and "FLUSH" not in kept
    assert kept.endswith(
        "\nCREATE DATABASE IF NOT EXISTS `a`;\nUSE `a`;\nINSERT INTO t VALUES ('GRANT x;');\n"
    )


def test_databases_loaded_and_readable(server: ServerInfo) -> None:
    assert server.host == "127.0.0.1" and server.user == READER_USER
    assert set(server.databases) == SPIDER_DATABASES
    with reader(server) as conn:
        shown = {name for (name,) in query(conn, "SHOW DATABASES")}
        assert shown == SPIDER_DATABASES | {"information_schema"}
        assert query(conn, "SELECT count(*) FROM museum_visit.museum") == ((8,),)
        assert query(conn, "SELECT count(*) FROM cre_Doc_Template_Mgt.Documents")[0][0] > 0


def test_info_file_is_private(server: ServerInfo) -> None:
    assert (server.datadir / "ipr_server.json").stat().st_mode & 0o777 == 0o600
    assert server_info(server.datadir) == server


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO museum (Museum_ID, Name) VALUES (99, 'x')",
        "UPDATE museum SET Name = 'x'",
        "DELETE FROM museum",
        "TRUNCATE TABLE museum",
        "DROP TABLE museum",
        "DROP DATABASE museum_visit",
        "CREATE TABLE t (a INT)",
        "CREATE TEMPORARY TABLE t (a INT)",
        "CREATE TEMPORARY TABLE t AS SELECT * FROM museum",
        "CREATE DATABASE scratch",
        "CREATE VIEW v AS SELECT 1",
        "ALTER TABLE museum ADD COLUMN x INT",
        "RENAME TABLE museum TO m2",
        "GRANT SELECT ON museum_visit.* TO 'admin'@'%'",
        "CREATE USER 'x'@'%' IDENTIFIED BY 'x'",
        "SET GLOBAL max_statement_time = 0",
        "SELECT * FROM museum INTO OUTFILE '/tmp/ipr_sql_server_outfile.txt'",
        "LOAD DATA INFILE '/etc/passwd' INTO TABLE museum",
        "SELECT * FROM mysql.user",
    ],
)
def test_reader_cannot_change_anything(server: ServerInfo, statement: str) -> None:
    before = museum_rows(server)
    with reader(server) as conn, pytest.raises(pymysql.err.MySQLError):
        query(conn, statement)
    assert museum_rows(server) == before
    assert not Path("/tmp/ipr_sql_server_outfile.txt").exists()


def test_reader_cannot_read_files(server: ServerInfo) -> None:
    with reader(server) as conn:
        try:
            result = query(conn, "SELECT LOAD_FILE('/etc/passwd')")
        except pymysql.err.MySQLError:
            return
    assert result == ((None,),)


def _assert_cut(conn: pymysql.connections.Connection, sql: str, codes: set[int]) -> None:
    """`sql` fails with one of `codes` within the timeout + 3 s; the connection still works."""
    t0 = time.monotonic()
    with pytest.raises(pymysql.err.OperationalError) as err:
        query(conn, sql)
    elapsed = time.monotonic() - t0
    assert err.value.args[0] in codes, err.value
    assert MARIADB_TIMEOUT * 0.9 <= elapsed < MARIADB_TIMEOUT + 3.0
    assert query(conn, "SELECT 1") == ((1,),)


def test_slow_statements_are_cut(server: ServerInfo) -> None:
    # MariaDB 10.11 interrupts SLEEP itself: error 1969 "max_statement_time exceeded".
    with reader(server) as conn:
        assert query(conn, "SELECT @@max_statement_time") == ((MARIADB_TIMEOUT,),)
        _assert_cut(conn, "SELECT SLEEP(30)", {1969})
        _assert_cut(conn, SLOW_JOIN, {1969})


def test_reader_cannot_lift_the_limit(server: ServerInfo) -> None:
    # MariaDB lets the reader SET its session max_statement_time (the per-user
    # MAX_STATEMENT_TIME is only the session default) and ignores the limit for
    # `SET STATEMENT max_statement_time=0 FOR ...`: the server's watchdog event then kills
    # the statement (error 1317 "Query execution was interrupted") within a second more.
    with reader(server) as conn:
        assert query(conn, "SELECT @@session.max_statement_time") == ((MARIADB_TIMEOUT,),)
        query(conn, "SET SESSION max_statement_time = 0")
        assert query(conn, "SELECT @@session.max_statement_time") == ((0.0,),)
        _assert_cut(conn, "SELECT SLEEP(30)", {1317})
        _assert_cut(conn, SLOW_JOIN, {1317})
        query(conn, "SET SESSION max_statement_time = DEFAULT")
        _assert_cut(conn, "SET STATEMENT max_statement_time = 0 FOR SELECT SLEEP(30)", {1317})


def test_dump_accounts_not_created(server: ServerInfo) -> None:
    with admin(server) as conn:
        users = {user for (user,) in query(conn, "SELECT DISTINCT user FROM mysql.user")}
    assert "admin" not in users
    assert users <= {"root", "mariadb.sys", READER_USER, getpass.getuser()}
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(host=server.host, port=server.port, user="admin", password="admin")


def _listeners(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def test_listens_on_loopback_only(server: ServerInfo) -> None:
    with admin(server) as conn:
        assert query(conn, "SELECT @@bind_address, @@skip_networking") == (("127.0.0.1", 0),)
    if Path("/proc/net/tcp").exists():
        assert _listeners(server.port) == {"0100007F"}  # 127.0.0.1, no IPv6 listener


def test_stop_and_fast_restart_reuse_data(
    server: ServerInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = int((server.datadir / "mysqld.pid").read_text())
    assert stop_server(server.datadir)
    assert not Path(f"/proc/{pid}").exists() or b"mariadbd" not in _cmdline(pid)
    assert server_info(server.datadir) is None
    assert not stop_server(server.datadir)

    def no_reload(*args: object) -> None:
        raise AssertionError("the dump was loaded again")

    monkeypatch.setattr(sql_server, "_load_dump", no_reload)
    t0 = time.monotonic()
    again = start_server(server.datadir, default_dump_path(), statement_timeout=MARIADB_TIMEOUT)
    assert time.monotonic() - t0 < 10.0
    assert (again.password, again.databases, again.port) == (
        server.password,
        server.databases,
        server.port,
    )
    with reader(again) as conn:
        assert query(conn, "SELECT count(*) FROM museum_visit.museum") == ((8,),)
        _assert_cut(conn, "SET STATEMENT max_statement_time = 0 FOR SELECT SLEEP(30)", {1317})
    assert start_server(server.datadir, default_dump_path()) == again  # already running: same info
    assert stop_server(server.datadir)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
