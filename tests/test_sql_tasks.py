"""InterCode-SQL tasks: task files (JSON and CSV) with clear errors, the deterministic
train/test split that never splits a question, the env handle and its config errors."""

from __future__ import annotations

import json

import pytest

from ipr_lightning.config import ConfigError, EnvConfig
from ipr_lightning.envs import build_env
from ipr_lightning.envs.intercode_sql import SqlOptions
from ipr_lightning.envs.intercode_sql.env import SqlTask
from ipr_lightning.envs.intercode_sql.tasks import (
    expert_steps,
    load_tasks,
    shipped_tasks,
    split_tasks,
)


def record(i: int, **over) -> dict:
    base = {"db": "museum_visit", "gold": f"SELECT {i}", "query": f"Question {i}?"}
    return {**base, "hardness": "easy", "db_tables": {}, **over}


def test_task_file_loads_with_ids_and_hardness(tmp_path):
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps([record(0), record(1, hardness="extra", query="  Two\n words ")]))
    tasks = load_tasks(path)
    assert [t.id for t in tasks] == ["sql-0000", "sql-0001"]
    assert tasks[1].hardness == "extra" and tasks[1].question == "Two words"


@pytest.mark.parametrize(
    "content, message",
    [
        ("[{", "not valid JSON"),
        ('{"db": "x"}', "expected a JSON list"),
        ("[]", "no task records"),
        (json.dumps([record(0), "text"]), "record 1: expected an object"),
        (json.dumps([record(0), record(1, gold="")]), "record 1: field 'gold' must be"),
        (json.dumps([record(0, db=None)]), "record 0: field 'db' must be"),
    ],
)
def test_bad_task_files_name_file_record_and_field(tmp_path, content, message):
    path = tmp_path / "tasks.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        load_tasks(path)
    assert str(path) in str(err.value)


def test_shipped_csv_questions():
    tasks = shipped_tasks()
    assert len(tasks) == 23 and {t.hardness for t in tasks} == {"unknown"}
    assert tasks[0].db == "pets_1" and tasks[0].question.startswith("Find the first name")


def test_split_is_deterministic_sized_and_keeps_questions_together():
    tasks = [SqlTask(f"sql-{i:04d}", "db", f"question {i % 40}", "SELECT 1") for i in range(100)]
    # 40 distinct questions, asked 2-3 times each
    split = split_tasks(tasks, test_size=20)
    assert len(split["test"]) == 20 and len(split["train"]) == 80 and len(split["all"]) == 100
    test_questions = {t.question for t in split["test"]}
    assert not test_questions & {t.question for t in split["train"]}
    assert split_tasks(tasks, test_size=20) == split
    assert split_tasks(tasks, test_size=20, seed=1)["test"] != split["test"]
    with pytest.raises(ValueError, match="between 1 and 99"):
        split_tasks(tasks, test_size=100)


def test_expert_inspects_the_schema_for_joins():
    join = SqlTask("sql-0001", "db", "q", "SELECT a.x FROM Alpha AS a JOIN beta AS b ON a.i = b.i")
    steps = expert_steps(join, ["alpha", "beta", "gamma"])
    actions = [a for _, a in steps]
    assert actions[0] == "```sql\nSHOW TABLES\n```"
    assert actions[1:3] == ["```sql\nDESCRIBE alpha\n```", "```sql\nDESCRIBE beta\n```"]
    assert actions[-2] == f"```sql\n{join.gold}\n```" and actions[-1] == "submit"
    single = SqlTask("sql-0002", "db", "q", "SELECT x FROM alpha;")
    assert [a for _, a in expert_steps(single, ["alpha"])] == [
        "```sql\nSELECT x FROM alpha\n```",
        "submit",
    ]


def test_handle_splits_and_config_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cfg = EnvConfig(name="intercode_sql", max_turns=10, options=SqlOptions(test_size=5))
    train, test = build_env(cfg, "train"), build_env(cfg, "test")
    assert len(train.task_ids) == 18 and len(test.task_ids) == 5
    assert not set(train.task_ids) & set(test.task_ids)
    assert test.group_of(test.task_ids[0]) == "unknown"
    with pytest.raises(ConfigError, match="unknown intercode_sql split 'valid_unseen'"):
        build_env(cfg, "valid_unseen")
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps([record(i) for i in range(3)] + [record(3, db="no_such_db")]))
    bad = EnvConfig(name="intercode_sql", options=SqlOptions(task_file=str(path), test_size=1))
    with pytest.raises(ConfigError, match=r"databases \['no_such_db'\] are not in the sqlite"):
        build_env(bad, "train")
    with pytest.raises(ConfigError, match="env.options.task_file: set InterCode's task file"):
        build_env(EnvConfig(name="intercode_sql", options=SqlOptions(task_file=None)), "train")
    with pytest.raises(ConfigError, match="env.options.backend must be one of"):
        SqlOptions(backend="postgres")
    assert train.make_env().reward_mode == "intercode"  # InterCode's comparison by default
    canonical = EnvConfig(name="intercode_sql", options=SqlOptions(test_size=5, reward="canonical"))
    assert build_env(canonical, "test").make_env().reward_mode == "canonical"
    with pytest.raises(ConfigError, match="env.options.reward must be one of"):
        SqlOptions(reward="fuzzy")


def test_sql_stats_names_the_option_that_is_wrong(capsys):
    """#16 minor: a missing --tasks file was blamed on --test-size."""
    from ipr_lightning.data_cli import main

    assert main(["sql", "stats", "--tasks", "BAD"]) == 2
    assert capsys.readouterr().err.startswith("ipr-data: error: --tasks: ")
    assert main(["sql", "stats", "--test-size", "100000"]) == 2
    assert capsys.readouterr().err.startswith("ipr-data: error: --test-size: ")
