"""`build_intercode_sql(cfg.env, split)`: the InterCode-SQL `EnvHandle` (registered in
`__init__.py`, options `SqlOptions` under `env.options`).

Backend (`env.options.backend`): `sqlite` converts the dump (`env.options.dump`, default the one in
intercode-bench) once into `~/.cache/ipr_lightning/intercode_sql/` (XDG_CACHE_HOME honoured);
`mysql` connects to a server: the one `ipr-data sql server start --dir D` runs when
`env.options.server_dir=D`, else `env.options.host/port/user` with the password from the variable
named by `env.options.password_env`.

Splits: `train` / `test` (`env.options.test_size` questions, paper 200) / `all`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ipr_lightning.config import ConfigError, EnvConfig
from ipr_lightning.data.records import Trajectory, Turn
from ipr_lightning.envs.base import EnvHandle, env_cache_dir, example_turns
from ipr_lightning.envs.intercode_sql import SqlOptions
from ipr_lightning.envs.intercode_sql.backends import (
    MySQLBackend,
    QueryResult,
    ServerAddress,
    SqliteBackend,
    SqlLimits,
)
from ipr_lightning.envs.intercode_sql.env import IntercodeSqlEnv, SqlBackend, SqlTask
from ipr_lightning.envs.intercode_sql.tasks import (
    expert_trajectory,
    load_tasks,
    shipped_tasks,
    split_tasks,
)

EMBEDDED_TASKS = "embedded:intercode"
log = logging.getLogger("ipr_lightning")


def sql_backend(cfg: SqlOptions) -> SqlBackend:
    """The configured database backend (converting the dump for SQLite on first use)."""
    from ipr_lightning.envs.intercode_sql.dump import default_dump_path, sqlite_databases

    limits = SqlLimits(cfg.timeout_s, cfg.max_result_rows, cfg.max_result_bytes)
    if cfg.backend == "sqlite":
        try:
            dump = Path(cfg.dump).expanduser() if cfg.dump else default_dump_path()
            if not dump.is_file():
                raise FileNotFoundError(f"env.options.dump: no such file {dump}")
            return SqliteBackend(sqlite_databases(dump, env_cache_dir("intercode_sql")), limits)
        except (FileNotFoundError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
    if cfg.server_dir:
        from ipr_lightning.envs.intercode_sql.server import server_info

        info = server_info(Path(cfg.server_dir).expanduser())
        if info is None:
            raise ConfigError(
                f"env.options.server_dir: no running server in {cfg.server_dir} "
                f"(start one: ipr-data sql server start --dir {cfg.server_dir})"
            )
        address = ServerAddress(info.host, info.port, info.user, info.password)
    else:
        address = ServerAddress(cfg.host, cfg.port, cfg.user, os.environ.get(cfg.password_env, ""))
    return MySQLBackend(address, limits)


def sql_tasks(cfg: SqlOptions) -> list[SqlTask]:
    if not cfg.task_file:
        raise ConfigError(
            "env.options.task_file: set InterCode's task file, e.g. "
            f"env.options.task_file=/path/to/ic_spider_dev.json (or {EMBEDDED_TASKS})"
        )
    try:
        if cfg.task_file == EMBEDDED_TASKS:
            return shipped_tasks()
        return load_tasks(cfg.task_file)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"env.options.task_file: {exc}") from None


def check_databases(tasks: list[SqlTask], backend: SqlBackend, task_file: str) -> None:
    try:
        known = {name.lower() for name in backend.databases()}  # case-insensitive names
    except Exception as exc:  # noqa: BLE001 - any driver error: one line naming the server
        raise ConfigError(f"env.options: cannot list the {backend.name} databases: {exc}") from None
    missing = sorted({t.db for t in tasks if t.db.lower() not in known})
    if missing:
        raise ConfigError(
            f"{task_file}: databases {missing} are not in the {backend.name} backend "
            f"(it has {len(known)}: {sorted(known)[:5]}...)"
        )


def build_intercode_sql(cfg: EnvConfig, split: str) -> EnvHandle:
    sql: SqlOptions = cfg.options
    all_tasks = sql_tasks(sql)
    backend = sql_backend(sql)  # a missing dump or server first: it is the bigger gap
    try:
        splits = split_tasks(all_tasks, sql.test_size, sql.split_seed)
    except ValueError as exc:
        hint = ""
        if sql.task_file.startswith("embedded:"):
            hint = (
                f" ({sql.task_file} is a {len(all_tasks)}-question sample; the paper's "
                "test_size=200 needs the full InterCode-SQL task file, see "
                "configs/intercode_sql_embedded.yaml for the sample's settings)"
            )
        raise ConfigError(f"env.options.test_size: {exc}{hint}") from None
    tasks = splits[split]
    check_databases(all_tasks, backend, sql.task_file)
    by_id = {t.id: t for t in tasks}
    gold_cache: dict[str, QueryResult] = {}

    def make_env() -> IntercodeSqlEnv:
        return IntercodeSqlEnv(
            by_id,
            backend,
            cfg.max_turns,
            sql.observation_rows,
            sql.observation_chars,
            gold_cache,
            sql.reward,
        )

    example: list[Turn] | None = None
    if cfg.in_context_example:  # a train question, never an evaluation one
        first_train = splits["train"][0]
        env = IntercodeSqlEnv(
            {first_train.id: first_train}, backend, cfg.max_turns, reward_mode=sql.reward
        )
        example = example_turns(expert_trajectory(env, first_train))
        env.close()

    def expert() -> list[Trajectory]:
        return expert_data(make_env(), tasks, example)

    return EnvHandle(
        "intercode_sql",
        split,
        make_env,
        list(by_id),
        expert,
        lambda task_id: example,
        group_of=lambda task_id: by_id[task_id].hardness,
    )


def expert_data(
    env: IntercodeSqlEnv, tasks: list[SqlTask], example: list[Turn] | None
) -> list[Trajectory]:
    """Expert trajectories of the tasks; a task whose expert does not reach reward 1.0 (it
    needs more than max_turns steps, or its gold query fails or returns too many rows on this
    backend) is left out, with a warning."""
    from tqdm.auto import tqdm

    kept, dropped = [], []
    for task in tqdm(tasks, desc="sql expert", leave=False):
        trajectory = expert_trajectory(env, task, example)
        (kept if trajectory.reward == 1.0 else dropped).append(trajectory)
    env.close()
    if dropped:
        log.warning(
            "%d of %d InterCode-SQL experts left out: reward < 1 within %d turns on the %s "
            "backend (too many steps, or the gold query failed or returned too many rows), e.g. %s",
            len(dropped),
            len(tasks),
            env.max_turns,
            env.backend.name,
            dropped[0].id,
        )
    return kept
