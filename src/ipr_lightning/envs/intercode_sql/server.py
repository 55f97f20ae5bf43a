"""A private, local MariaDB server holding the Spider databases of InterCode-SQL.

`start_server(datadir, dump)` initialises `datadir` once, starts `mariadbd` on 127.0.0.1 (unix
socket, pid file and `server.log` in `datadir`; root connects only through the socket), loads
the dump of `intercode-bench` on the first start (its CREATE USER / GRANT / FLUSH PRIVILEGES
lines stripped, never run) and creates `ipr_reader`: SELECT and SHOW VIEW on the loaded
databases, nothing else. Statements stop after `statement_timeout` s: server-wide
`max_statement_time`, the same limit on the account, and a watchdog event that kills reader
statements older than the limit (MariaDB lets any user SET its session max_statement_time).
Port, reader password and databases live in `<datadir>/ipr_server.json` (mode 0600); later
starts of the datadir reuse data and file. Needs `apt-get install -y mariadb-server` (no system
service needed) and `pip install --no-deps intercode-bench`. From the command line:

    ipr-data sql server start --dir /tmp/ipr_sql   # also: info, stop
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pymysql

log = logging.getLogger(__name__)

READER_USER = "ipr_reader"
HOST = "127.0.0.1"
INFO_FILE = "ipr_server.json"
SOCKET_FILE = "mysqld.sock"
PID_FILE = "mysqld.pid"
LOG_FILE = "server.log"
LOCK_FILE = "ipr_server.lock"
WATCHDOG_DB = "ipr_watchdog"
LOAD_TIMEOUT = 600.0
INSTALL_HINT = "MariaDB is not installed: apt-get install -y mariadb-server"
SYSTEM_DATABASES = {"information_schema", "mysql", "performance_schema", "sys", WATCHDOG_DB}
# Account statements a dump must never run (line-anchored; a statement runs up to its ';').
_ACCOUNT_STATEMENT = re.compile(
    r"^[ \t]*(?:CREATE\s+(?:OR\s+REPLACE\s+)?(?:USER|ROLE)|DROP\s+(?:USER|ROLE)|ALTER\s+USER"
    r"|RENAME\s+USER|GRANT|REVOKE|SET\s+PASSWORD|SET\s+(?:DEFAULT\s+)?ROLE|FLUSH\s+PRIVILEGES)"
    r"\b[^;]*;[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
_PROGRAMS = ("mariadbd mysqld", "mariadb-install-db mysql_install_db", "mariadb mysql")
_PROCS: dict[Path, subprocess.Popen] = {}  # servers started by this process (reaped on stop)


@dataclass(frozen=True)
class ServerInfo:
    host: str
    port: int
    user: str
    password: str
    databases: list[str]
    datadir: Path


def find_mariadb() -> tuple[str, str, str]:
    """Paths of mariadbd (or mysqld), mariadb-install-db (or mysql_install_db) and the
    mariadb (or mysql) client; RuntimeError when one is missing."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])
    which = [[shutil.which(n, path=path) for n in alts.split()] for alts in _PROGRAMS]
    found = [next(filter(None, paths), None) for paths in which]
    if None in found:
        raise RuntimeError(INSTALL_HINT)
    return found[0], found[1], found[2]


def strip_account_statements(sql: str) -> str:
    """`sql` without its user/role/grant/privilege statements."""
    return _ACCOUNT_STATEMENT.sub("", sql)


def _admin_user() -> str:
    return "root" if os.geteuid() == 0 else getpass.getuser()


def _admin_connect(datadir: Path, timeout: float = 5.0) -> pymysql.connections.Connection:
    sock = str(datadir / SOCKET_FILE)
    return pymysql.connect(unix_socket=sock, user=_admin_user(), connect_timeout=timeout)


def _read_pid(datadir: Path) -> int | None:
    try:
        return int((datadir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int, datadir: Path) -> bool:
    """True when `pid` is a live (not zombie) mariadbd of `datadir`."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False  # our child, now reaped
    proc = Path(f"/proc/{pid}")
    try:
        os.kill(pid, 0)
        if not proc.is_dir():
            return True  # no procfs: trust the pid file
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:  # gone, or not ours to signal
        return False
    return state != "Z" and f"--datadir={datadir}".encode() in cmdline


def _answers(datadir: Path) -> bool:
    with contextlib.suppress(pymysql.err.MySQLError):
        _admin_connect(datadir, timeout=2.0).close()
        return True
    return False


def _running_pid(datadir: Path) -> int | None:
    pid = _read_pid(datadir)
    return pid if pid is not None and _pid_alive(pid, datadir) and _answers(datadir) else None


def server_info(datadir: Path) -> ServerInfo | None:
    """Info of a running server for datadir, else None."""
    datadir = Path(datadir).resolve()
    state = _load_state(datadir)
    if state is None or _running_pid(datadir) is None:
        return None
    return _info(datadir, state)


def _info(datadir: Path, state: dict) -> ServerInfo:
    port, user, password = int(state["port"]), state["user"], state["password"]
    return ServerInfo(HOST, port, user, password, list(state["databases"]), datadir)


def _load_state(datadir: Path) -> dict | None:
    try:
        return json.loads((datadir / INFO_FILE).read_text())
    except (OSError, ValueError):
        return None


def _save_state(datadir: Path, state: dict) -> None:
    tmp = datadir / (INFO_FILE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # only ever created 0600
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=2)
    os.replace(tmp, datadir / INFO_FILE)


@contextlib.contextmanager
def _locked(datadir: Path) -> Iterator[None]:
    with open(datadir / LOCK_FILE, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
        yield


def _log_tail(datadir: Path) -> str:
    with contextlib.suppress(OSError):
        return "\n".join((datadir / LOG_FILE).read_text(errors="replace").splitlines()[-15:])
    return "(no server log)"


def _free_port(preferred: int = 0) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as mariadbd: TIME_WAIT is ok
        try:
            s.bind((HOST, preferred))
        except OSError:
            s.bind((HOST, 0))
        return s.getsockname()[1]


def _initialise(datadir: Path, install_db: str) -> bool:
    """Run mariadb-install-db unless `datadir` holds a data directory; True if it ran."""
    if (datadir / "mysql").is_dir():
        return False
    own = {LOCK_FILE, LOG_FILE, INFO_FILE}
    if any(p.name not in own for p in datadir.iterdir()):
        raise RuntimeError(f"{datadir} is neither empty nor a MariaDB data directory")
    t0 = time.monotonic()
    cmd = [install_db, "--no-defaults", f"--datadir={datadir}", f"--user={_admin_user()}"]
    cmd += ["--auth-root-authentication-method=socket", "--skip-test-db", "--skip-name-resolve"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=LOAD_TIMEOUT)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-2000:]
        raise RuntimeError(f"mariadb-install-db failed ({proc.returncode}):\n{tail}")
    log.info("initialised %s in %.2f s", datadir, time.monotonic() - t0)
    return True


def _launch(datadir: Path, mariadbd: str, port: int, statement_timeout: float) -> None:
    cmd = [mariadbd, "--no-defaults", f"--datadir={datadir}", f"--socket={datadir / SOCKET_FILE}"]
    cmd += [f"--pid-file={datadir / PID_FILE}", f"--log-error={datadir / LOG_FILE}"]
    cmd += [f"--bind-address={HOST}", f"--port={port}", "--skip-networking=0"]
    cmd += ["--skip-name-resolve", "--lower_case_table_names=1", "--max-connections=200"]
    cmd += [f"--max-statement-time={max(statement_timeout, 0.0):g}", "--event-scheduler=ON"]
    cmd.append("--innodb-flush-log-at-trx-commit=2")  # no fsync per row while loading
    if os.geteuid() == 0:
        cmd.append("--user=root")
    null = subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdin=null, stdout=null, stderr=null, start_new_session=True)
    _PROCS[datadir] = proc


def _wait_ready(datadir: Path, timeout: float) -> None:
    proc = _PROCS[datadir]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = _log_tail(datadir)
            raise RuntimeError(f"mariadbd exited with {proc.returncode}; {LOG_FILE}:\n{tail}")
        if _answers(datadir):
            return
        time.sleep(0.05)
    tail = _log_tail(datadir)
    raise RuntimeError(f"mariadbd did not answer within {timeout:g} s; {LOG_FILE}:\n{tail}")


def _load_dump(datadir: Path, client: str, dump: Path) -> None:
    sql = "SET SESSION max_statement_time=0;\n" + strip_account_statements(dump.read_text())
    cmd = [client, "--no-defaults", f"--socket={datadir / SOCKET_FILE}", f"--user={_admin_user()}"]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, input=sql, capture_output=True, text=True, timeout=LOAD_TIMEOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"loading {dump} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    log.info("loaded %s in %.2f s", dump.name, time.monotonic() - t0)


def _create_reader(cur: pymysql.cursors.Cursor, dump: Path) -> dict:
    """Create the read-only user on the loaded databases; returns the state to store."""
    cur.execute("SHOW DATABASES")
    databases = sorted(name for (name,) in cur.fetchall() if name.lower() not in SYSTEM_DATABASES)
    if not databases:
        raise RuntimeError(f"{dump} created no database")
    cur.execute("SELECT DISTINCT user FROM mysql.user")
    strangers = {u for (u,) in cur.fetchall()} - {"root", "mariadb.sys", _admin_user()}
    if strangers - {READER_USER}:
        raise RuntimeError(f"unexpected accounts after loading {dump}: {sorted(strangers)}")
    password = secrets.token_urlsafe(24)
    for host in (HOST, "localhost"):
        account = f"'{READER_USER}'@'{host}'"
        cur.execute(f"CREATE OR REPLACE USER {account} IDENTIFIED BY %s", (password,))
        for db in databases:
            cur.execute(f"GRANT SELECT, SHOW VIEW ON `{db.replace('`', '``')}`.* TO {account}")
    return {"user": READER_USER, "password": password, "databases": databases}


def _apply_limits(cur: pymysql.cursors.Cursor, statement_timeout: float) -> None:
    """Per-user MAX_STATEMENT_TIME for the reader, and the watchdog event that kills reader
    statements running longer than the limit (the reader can lift its session limit)."""
    limit = max(statement_timeout, 0.0)
    for host in (HOST, "localhost"):
        try:
            cur.execute(f"ALTER USER '{READER_USER}'@'{host}' WITH MAX_STATEMENT_TIME {limit:g}")
        except pymysql.err.MySQLError as exc:
            log.warning("per-user MAX_STATEMENT_TIME not accepted: %s", exc)
    cur.execute(f"CREATE DATABASE IF NOT EXISTS `{WATCHDOG_DB}`")
    cur.execute(f"DROP EVENT IF EXISTS `{WATCHDOG_DB}`.`kill_slow_reader`")
    if limit <= 0:
        return
    cur.execute(
        f"CREATE EVENT `{WATCHDOG_DB}`.`kill_slow_reader` ON SCHEDULE EVERY 1 SECOND "
        "ON COMPLETION PRESERVE DO BEGIN "
        "DECLARE done INT DEFAULT 0; DECLARE tid BIGINT UNSIGNED; "
        "DECLARE slow CURSOR FOR SELECT id FROM information_schema.processlist "
        f"WHERE user = '{READER_USER}' AND command <> 'Sleep' AND time_ms > {limit * 1000:.0f}; "
        "DECLARE CONTINUE HANDLER FOR NOT FOUND SET done = 1; "
        "DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN END; "
        "OPEN slow; next_id: LOOP FETCH slow INTO tid; IF done THEN LEAVE next_id; END IF; "
        "BEGIN DECLARE CONTINUE HANDLER FOR SQLEXCEPTION BEGIN END; KILL QUERY tid; END; "
        "END LOOP; CLOSE slow; END"
    )


def _choose_port(port: int, state: dict | None) -> int:
    return port or _free_port(int(state["port"]) if state else 0)


def start_server(
    datadir: Path, dump: Path, port: int = 0, timeout: float = 60.0, statement_timeout: float = 5.0
) -> ServerInfo:
    """Start the server of `datadir` (initialised when new) and return its info.

    The first start loads `dump` and creates the reader; later starts reuse data, password
    and, with `port=0`, the previous port when it is free (else any free one). A server of
    `datadir` that is already running is returned as it is (its port and limits unchanged).
    `statement_timeout` (seconds, 0 = none) cuts every statement; `timeout` bounds the wait
    for the server to answer. RuntimeError, with the log tail, when anything fails; a server
    started by this call is stopped again then."""
    mariadbd, install_db, client = find_mariadb()
    datadir = Path(datadir).resolve()
    if len(str(datadir / SOCKET_FILE)) > 100:
        raise RuntimeError(f"datadir path too long for a unix socket: {datadir}")
    datadir.mkdir(parents=True, exist_ok=True)
    with _locked(datadir):
        state = _load_state(datadir)
        running = _running_pid(datadir) is not None
        if running and state is not None:
            return _info(datadir, state)
        started = False
        try:
            if not running:
                if _initialise(datadir, install_db):
                    state = None  # fresh data directory: load the dump again
                t0 = time.monotonic()
                _launch(datadir, mariadbd, _choose_port(port, state), statement_timeout)
                started = True
                _wait_ready(datadir, timeout)
                log.info("mariadbd answered after %.2f s", time.monotonic() - t0)
            state = _configure(datadir, client, Path(dump), state, statement_timeout)
        except BaseException:
            if started:
                stop_server(datadir)
            raise
        _save_state(datadir, state)
        return _info(datadir, state)


def _configure(datadir: Path, client: str, dump: Path, state: dict | None, limit: float) -> dict:
    """Load the dump and create the reader when `state` is None; (re)apply the limits."""
    if state is None:
        _load_dump(datadir, client, dump)
    with contextlib.closing(_admin_connect(datadir)) as conn, conn.cursor() as cur:
        cur.execute("SET SESSION max_statement_time=0")
        if state is None:
            state = _create_reader(cur, dump)
        _apply_limits(cur, limit)
        cur.execute("SELECT @@port")
        (actual_port,) = cur.fetchone()
    return {**state, "port": int(actual_port)}


def stop_server(datadir: Path, timeout: float = 30.0) -> bool:
    """Stop the server of `datadir` (SIGTERM, SIGKILL after `timeout`); False if none ran."""
    datadir = Path(datadir).resolve()
    proc = _PROCS.pop(datadir, None)
    pid = _read_pid(datadir) or (proc.pid if proc is not None else None)
    if pid is None or not _pid_alive(pid, datadir):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid, datadir):
        if time.monotonic() > deadline:
            log.warning("mariadbd %d ignored SIGTERM for %.0f s: SIGKILL", pid, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = float("inf")
        time.sleep(0.05)
    if proc is not None:
        proc.poll()  # reap it if _pid_alive did not
    with contextlib.suppress(FileNotFoundError):
        (datadir / PID_FILE).unlink()
    return True
