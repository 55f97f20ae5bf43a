"""InterCode-SQL on both backends (embedded SQLite; a private MariaDB from conftest): the 23
shipped gold queries and their experts score 1.0, wrong queries score by InterCode's
formula, multi-line blocks run whole, long results are summarised but score whole, and no
agent statement can change anything, run too long or return too much."""

from __future__ import annotations

import time

import pytest

from ipr_lightning.envs.intercode_sql.backends import (
    MySQLBackend,
    QueryResult,
    ServerAddress,
    SqliteBackend,
    SqlLimits,
    check_statement,
)
from ipr_lightning.envs.intercode_sql.dump import default_dump_path, sqlite_databases
from ipr_lightning.envs.intercode_sql.env import (
    SQL_ACTION_END,
    IntercodeSqlEnv,
    SqlTask,
    format_result,
)
from ipr_lightning.envs.intercode_sql.tasks import expert_trajectory, shipped_tasks
from ipr_lightning.envs.intercode_sql.worker import GRACE_S

LIMITS = SqlLimits(timeout_s=1.0, max_rows=100, max_bytes=1_000_000)
MUSEUM = SqlTask(
    "sql-0900",
    "museum_visit",
    "List the museum ids.",
    "SELECT Museum_ID FROM museum ORDER BY Museum_ID",
)


@pytest.fixture(scope="module")
def sqlite_backend(tmp_path_factory: pytest.TempPathFactory) -> SqliteBackend:
    try:
        dump = default_dump_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    return SqliteBackend(sqlite_databases(dump, tmp_path_factory.mktemp("sqlite")), LIMITS)


@pytest.fixture(params=["sqlite", "mariadb"])
def backend(request: pytest.FixtureRequest, sqlite_backend: SqliteBackend):
    if request.param == "sqlite":
        return sqlite_backend
    info = request.getfixturevalue("mariadb_server")
    return MySQLBackend(ServerAddress(info.host, info.port, info.user, info.password), LIMITS)


def act(sql: str) -> str:
    return f"Thought: let me query.\nAction: \n```sql\n{sql}\n```"


def play(env: IntercodeSqlEnv, task: SqlTask, *queries: str) -> tuple[str, float]:
    """Run the queries, then submit: (last observation before submitting, reward)."""
    env.reset(options={"task_id": task.id})
    obs = ""
    for sql in queries:
        obs = env.step(act(sql))[0]
    _, reward, terminated, _, _ = env.step("Thought: done.\nAction: submit")
    assert terminated
    return obs, reward


@pytest.mark.parametrize("mode", ["intercode", "canonical"])
def test_shipped_experts_reach_one(backend, mode):
    """Every shipped gold query scores 1.0, through the scripted expert's trajectory, under
    both comparisons (gold and agent rows come from the same backend)."""
    tasks = shipped_tasks()
    assert len(tasks) == 23
    env = IntercodeSqlEnv({t.id: t for t in tasks}, backend, reward_mode=mode)
    for task in tasks:
        trajectory = expert_trajectory(env, task)
        assert trajectory.reward == 1.0, (task.id, trajectory.turns[-2:])
        assert trajectory.turns[-1].content.endswith("Action: submit")
        assert "returned" in trajectory.turns[-1].content  # the thought reads the result
    env.close()


def test_backends_agree_on_shipped_gold(sqlite_backend, mariadb_server):
    info = mariadb_server
    mysql = MySQLBackend(ServerAddress(info.host, info.port, info.user, info.password), LIMITS)
    for task in shipped_tasks():
        a, b = sqlite_backend.open(task.db), mysql.open(task.db)
        rows_a, rows_b = a.run(task.gold).rows, b.run(task.gold).rows
        a.close(), b.close()
        assert rows_a is not None and sorted(map(str, rows_a)) == sorted(map(str, rows_b))
        if "order by" in task.gold.lower():  # without ORDER BY the engines' orders differ
            assert rows_a == rows_b


@pytest.mark.parametrize(
    "queries, expected",
    [
        (["SELECT Museum_ID\nFROM museum\nORDER BY Museum_ID"], 1.0),  # every line runs
        (["SELECT Museum_ID FROM museum ORDER BY Museum_ID DESC"], -1.0),  # IoU 1, tau -1
        (["SELECT Museum_ID FROM museum WHERE Museum_ID <= 4 ORDER BY Museum_ID"], 0.5),
        # ids 1, 2 of 8 in reverse: IoU 2/8, tau -1
        (["SELECT Museum_ID FROM museum WHERE Museum_ID IN (1, 2) ORDER BY Museum_ID DESC"], -0.25),
        # a duplicate row: IoU 8/9, tau 1 -> round(0.889, 2)
        (["SELECT Museum_ID FROM museum UNION ALL SELECT 1"], 0.89),
        ([], 0.0),  # submitted before any query
        (["SELECT nope FROM museum"], 0.0),  # the last query failed
        (["SELECT Museum_ID FROM museum ORDER BY Museum_ID", "SHOW TABLES"], 0.0),  # last counts
    ],
)
def test_rewards_of_wrong_queries(backend, queries, expected):
    env = IntercodeSqlEnv({MUSEUM.id: MUSEUM}, backend)
    assert play(env, MUSEUM, *queries)[1] == pytest.approx(expected)


# Results that are equal only after canonicalisation, on each backend: SQLite's double
# 0.1 + 0.2 = 0.30000000000000004 against 0.3 (equal once rounded to 6 decimals); MariaDB's
# DECIMAL literals Decimal('1.5000') against Decimal('1.50') (both 1.5 as canonical values).
NEAR_EQUAL = {
    "sqlite": ("SELECT 0.3", "SELECT 0.1 + 0.2"),
    "mysql": ("SELECT 1.50", "SELECT 1.5000"),
}


@pytest.mark.parametrize("mode, expected", [("intercode", 0.0), ("canonical", 1.0)])
def test_reward_mode_reaches_the_env(backend, mode, expected):
    """One row each. intercode: the driver's values print differently -> shared 0 -> 0.0;
    canonical: the same row -> IoU 1, tau undefined for one row -> 1.0."""
    gold, agent = NEAR_EQUAL[backend.name]
    task = SqlTask("sql-0901", "museum_visit", "A number?", gold)
    env = IntercodeSqlEnv({task.id: task}, backend, reward_mode=mode)
    obs, reward = play(env, task, agent)
    assert reward == expected
    assert play(env, task, gold)[1] == 1.0  # gold against gold: 1.0 in both modes
    with pytest.raises(ValueError, match="reward_mode"):
        IntercodeSqlEnv({task.id: task}, backend, reward_mode="fuzzy")


def test_long_results_are_summarised_but_score_whole(backend):
    env = IntercodeSqlEnv({MUSEUM.id: MUSEUM}, backend, observation_rows=3)
    obs, reward = play(env, MUSEUM, MUSEUM.gold)
    assert obs == "[(1,), (2,), (3,), ...] (8 rows in all; the first 3 are shown)"
    assert reward == 1.0
    long = QueryResult([("x" * 50,)] * 10)
    assert len(format_result(long, max_rows=10, max_chars=200)) < 300


def test_observations_and_turn_limit(sqlite_backend):
    env = IntercodeSqlEnv({MUSEUM.id: MUSEUM}, sqlite_backend, max_turns=3)
    question, info = env.reset(options={"task_id": MUSEUM.id})
    assert question == MUSEUM.question and info["db"] == "museum_visit"
    obs, _, _, _, info = env.step("Thought: hm.\nAction: SELECT 1")  # no code block
    assert info["invalid"] and "```sql" in obs
    obs, *_ = env.step(act("SELECT count(*) FROM nope"))
    assert obs == "Error executing query: no such table: nope"
    obs, reward, terminated, truncated, _ = env.step(act("SELECT count(*) FROM museum"))
    assert (obs, reward, terminated, truncated) == ("[(8,)]", 0.0, False, True)


def test_action_end_stops_after_the_block_or_submit():
    text = "Thought: x\nAction: \n```sql\nSELECT 1\nFROM t\n```\nObservation: made up"
    m = SQL_ACTION_END.search(text)
    assert m is not None and text[: m.end()].endswith("FROM t\n```")
    assert SQL_ACTION_END.search("Thought: x\nAction: \n```sql\nSELECT 1\n") is None
    assert SQL_ACTION_END.search("Thought: x\nAction: submit\n") is not None


# -- safety --------------------------------------------------------------------------------

HOSTILE = [
    "DROP TABLE museum",
    "DELETE FROM museum",
    "UPDATE museum SET Name = 'x'",
    "INSERT INTO museum VALUES (99, 'x', 1, '2000')",
    "CREATE TABLE evil (x int)",
    "SELECT 1; DROP TABLE museum",
    "SELECT 1 /*!; DROP TABLE museum */",
    "WITH x AS (SELECT 1) DELETE FROM museum",
    "SET SESSION max_statement_time = 0",
    "ATTACH DATABASE '{tmp}/evil.db' AS evil",
    "PRAGMA writable_schema = 1",
    "SELECT * FROM museum INTO OUTFILE '{tmp}/out.txt'",
    "GRANT ALL ON *.* TO ipr_reader",
    "LOAD DATA INFILE '/etc/passwd' INTO TABLE museum",
]


def test_hostile_statements_change_nothing(backend, tmp_path):
    env = IntercodeSqlEnv({MUSEUM.id: MUSEUM}, backend)
    env.reset(options={"task_id": MUSEUM.id})
    for sql in HOSTILE:
        obs, *_ = env.step(act(sql.format(tmp=tmp_path)))
        assert obs.startswith("Error executing query: "), (sql, obs)
        env._turns = 0  # keep the episode going
    obs, *_ = env.step(act("SELECT count(*), max(Name) FROM museum"))
    assert obs == "[(8, 'ZirMed Gateway Museum')]"
    assert list(tmp_path.iterdir()) == []
    env.close()


def test_checks_are_quote_and_comment_aware():
    assert check_statement("SELECT ';' FROM t -- ; DROP TABLE t") is None
    assert check_statement("SELECT 1;  -- trailing comment\n") is None
    assert check_statement("(SELECT 1) UNION (SELECT 2)") is None
    assert "one statement" in check_statement("SELECT 1; SELECT 2")
    assert "read-only" in check_statement("/* hi */ DELETE FROM t")


SLOW = {  # an endless loop (MariaDB stops recursion itself: 1,000 rounds) and a big join
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
    "SELECT count(*) FROM c",
    "mysql": "SELECT SLEEP(30)",
}
BIG_JOIN = "SELECT count(*) FROM " + ", ".join(f"museum t{i}" for i in range(9))  # 8^9 rows


@pytest.mark.parametrize("slow", ["endless", "join"])
def test_slow_statements_time_out_and_the_session_goes_on(backend, slow):
    session = backend.open("museum_visit")
    start = time.monotonic()
    result = session.run(SLOW[backend.name] if slow == "endless" else BIG_JOIN)
    assert result.rows is None and ("timed out" in result.error or "interrupted" in result.error)
    assert time.monotonic() - start < LIMITS.timeout_s + 4
    assert session.run("SELECT count(*) FROM museum").rows == [(8,)]
    session.close()


def test_result_size_is_capped(backend):
    session = backend.open("museum_visit")
    result = session.run("SELECT a.Museum_ID FROM museum a, museum b, museum c")  # 512 rows
    assert result.rows is None and "more than 100 rows" in result.error
    assert session.run("SELECT count(*) FROM museum").rows == [(8,)]
    session.close()


BIG_ROWS = {  # 64 rows of 100 kB: 6.4 MB, under the row cap and over the byte cap
    "sqlite": "SELECT zeroblob(100000) FROM museum a, museum b",
    "mysql": "SELECT REPEAT('x', 100000) FROM museum a, museum b",
}


def test_result_bytes_are_capped(backend):
    """#16: `zeroblob(9900000) ... LIMIT 100` passed the row cap and peaked at 3 GB."""
    session = backend.open("museum_visit")
    result = session.run(BIG_ROWS[backend.name])
    assert result.rows is None and "larger than 1000000 bytes" in result.error
    one_value = session.run("SELECT zeroblob(2000000)" if backend.name == "sqlite" else "SELECT 1")
    assert backend.name != "sqlite" or "too big" in one_value.error  # no value over the cap
    assert session.run("SELECT count(*) FROM museum").rows == [(8,)]
    session.close()


LONG_INSTRUCTIONS = [  # each one SQLite instruction: the progress handler never ran (#16)
    "SELECT length(printf('%.*c', 2000000000, 'x'))",  # 12.8 s with a 5 s limit
    "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 300) "
    "SELECT count(*) FROM (SELECT printf('%.*c', 900000, char(65 + i % 26)) || i AS v "
    "FROM c ORDER BY v COLLATE MYSQL_CI)",  # 300 strings of 0.9 MB through the collation
]


@pytest.mark.parametrize("sql", LONG_INSTRUCTIONS, ids=["printf", "collation-sort"])
def test_a_long_single_instruction_is_stopped_from_outside(sqlite_backend, sql):
    session = sqlite_backend.open("museum_visit")
    start = time.monotonic()
    result = session.run(sql)
    assert result.rows is None and "timed out after 1.0 s" in result.error
    assert time.monotonic() - start < LIMITS.timeout_s + GRACE_S + 2
    assert session.run("SELECT count(*) FROM museum").rows == [(8,)]  # a fresh worker
    session.close()


def test_a_statement_needing_too_much_memory_fails_in_the_worker(sqlite_backend, tmp_path):
    """Sorting 1.5 GB (in memory: temp files are not used) hits the worker's address-space
    cap; the trainer's process never holds it."""
    backend = SqliteBackend(sqlite_backend.folder, SqlLimits(timeout_s=30, memory_bytes=300 << 20))
    session = backend.open("museum_visit")
    result = session.run(
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 1500) "
        "SELECT length(v) FROM (SELECT printf('%.*c', 1000000, 'x') || i AS v FROM c "
        "ORDER BY v) LIMIT 1"
    )
    assert result.rows is None and "out of memory" in result.error
    assert session.run("SELECT count(*) FROM museum").rows == [(8,)]
    session.close()
    backend.worker.stop()


def test_one_connection_per_episode(mariadb_server):
    info = mariadb_server
    backend = MySQLBackend(ServerAddress(info.host, info.port, info.user, info.password), LIMITS)
    env = IntercodeSqlEnv({MUSEUM.id: MUSEUM}, backend)
    ids = []
    for _ in range(2):
        env.reset(options={"task_id": MUSEUM.id})
        ids.append(env.step(act("SELECT CONNECTION_ID()"))[0])
    assert ids[0] != ids[1]
    env.close()


def test_ipr_fit_runs_sft_and_an_iteration_on_embedded_sql(tiny_model_cfg, tmp_path):
    """The installed `ipr-fit` on the embedded SQLite config (tiny random model, so actions are
    garbage: this checks the plumbing, the real-model numbers are in the README)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "run"
    args = [
        str(Path(sys.executable).parent / "ipr-fit"),
        "--config", str(root / "configs/intercode_sql_embedded.yaml"),
        f"output_dir={out}", "model.name_or_path=tiny-random",
        f"model.cache_dir={tiny_model_cfg.cache_dir}", "trainer.precision=32-true",
        "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "data.max_length=1024",
        "ipr.max_tasks=2", "ipr.max_new_tokens=8", "eval.max_new_tokens=8", "env.max_turns=6",
    ]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    phases = [json.loads(line) for line in (out / "phases.jsonl").read_text().splitlines()]
    assert [p["phase"] for p in phases] == ["sft", "iteration 1"]
    assert all(p["episodes"] == 5 for p in phases)  # the 5 test questions
    experts = json.loads((out / "expert_trajectories.json").read_text())
    assert len(experts) == 18 and all(e["reward"] == 1.0 for e in experts)
    transcripts = (out / "eval" / "after_sft" / "transcripts.jsonl").read_text().splitlines()
    assert len(transcripts) == 5
    # experts need up to 5 steps: with 2 turns none is solved -> one clear line, exit 2
    args[args.index("env.max_turns=6")] = "env.max_turns=2"
    args[args.index(f"output_dir={out}")] = f"output_dir={tmp_path / 'run2'}"
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "expert solved none of the train tasks" in proc.stderr


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT fts3_tokenizer('simple')",  # returns a native pointer: refused
        "SELECT count(*) FROM museum WHERE Name = CAST(x'ff' AS TEXT)",  # invalid UTF-8
        "SELECT Name FROM museum ORDER BY CAST(x'c3ff' AS TEXT) || Name",
    ],
)
def test_hostile_sqlite_functions_and_bytes_answer_with_text(sqlite_backend, sql):
    """#16: these raised out of env.step (UnicodeDecodeError in the collation) or handed the
    agent a pointer; an env step answers every model output with an observation."""
    env = IntercodeSqlEnv({MUSEUM.id: MUSEUM}, sqlite_backend)
    env.reset(options={"task_id": MUSEUM.id})
    obs, *_ = env.step(act(sql))
    assert isinstance(obs, str)
    if "fts3" in sql:
        assert obs.startswith("Error executing query: ") and "authoriz" in obs
    env.close()


def test_the_papers_test_size_on_the_embedded_sample_says_what_to_do():
    """#16 minor: `env.name=intercode_sql` with defaults stopped on a bare test_size range."""
    from ipr_lightning.config import ConfigError, EnvConfig
    from ipr_lightning.envs import build_env

    with pytest.raises(ConfigError, match="embedded:intercode is a 23-question sample"):
        build_env(EnvConfig(name="intercode_sql"), "train")
