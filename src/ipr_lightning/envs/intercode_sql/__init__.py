"""InterCode-SQL (`env.name: intercode_sql`): questions answered with SQL on the Spider
databases, InterCode's reward, the paper's prompt.

- `env.py`: the env (`IntercodeSqlEnv`); `reward.py`: InterCode's result comparison;
- `backends.py`, `worker.py`: SQLite (a killable worker process) and MariaDB/MySQL sessions;
- `dump.py`, `server.py`: the Spider dump to SQLite, and a local MariaDB server;
- `tasks.py`: task files, splits and the expert; `handle.py`: the builder;
- here: its options (`env.options.*`) and its registration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ipr_lightning.config import ConfigError
from ipr_lightning.envs.registry import register_env

BACKENDS = ("sqlite", "mysql")
REWARDS = ("intercode", "canonical")
# A complete action: `Action: submit` and its line end, or a closed code block.
SQL_ACTION_END = re.compile(
    r"^[ \t]*Action[ \t]*:\s*(?:submit\b[^\n]*\n|`{3}[\s\S]*?`{3})", re.MULTILINE | re.IGNORECASE
)


@dataclass
class SqlOptions:
    task_file: str | None = "embedded:intercode"
    """InterCode task file (JSON `[{"db", "gold", "query", "hardness"}]` or CSV
    `query,gold,db`); `embedded:intercode`: the 23 questions shipped in intercode-bench."""
    backend: str = "sqlite"
    """`sqlite` (the dump's databases converted once into read-only SQLite files, cached) or
    `mysql` (a MariaDB/MySQL server holding them, as InterCode uses)."""
    dump: str | None = None
    """MySQL dump with the databases, for the SQLite copy; unset: intercode-bench's Spider-dev
    dump (20 databases)."""
    server_dir: str | None = None
    """Data folder of a server started by `ipr-data sql server start --dir D`: host, port, user
    and password are read from it (then the four keys below are not needed)."""
    host: str = "127.0.0.1"
    """MariaDB/MySQL host (backend=mysql without server_dir)."""
    port: int = 3307
    """MariaDB/MySQL port."""
    user: str = "ipr_reader"
    """A read-only user of the server (SELECT on the task databases only)."""
    password_env: str = "IPR_SQL_PASSWORD"
    """Environment variable holding that user's password (never stored in config.yaml)."""
    test_size: int = 200
    """Questions in the test split (paper: 200); the rest is train. `all` is every question."""
    split_seed: int = 0
    """Seed of the train/test split."""
    timeout_s: float = 5.0
    """Statement time limit for agent and gold queries."""
    max_result_rows: int = 10_000
    """Results with more rows are refused with an error observation."""
    max_result_bytes: int = 4_000_000
    """Results with more bytes (text and blob lengths; 8 per number) are refused likewise."""
    observation_rows: int = 30
    """Result rows shown in an observation (the full result still scores)."""
    observation_chars: int = 2000
    """Characters of result shown in an observation (paper's code: 350, cut mid-row)."""
    reward: str = "intercode"
    """How result rows are compared: `intercode` (InterCode's exact comparison: `str(row)` of
    the values as the database driver returns them, so Decimal('1.5000') != Decimal('1.50'))
    or `canonical` (values normalised first, `sql_reward.canonical_row`: the SQLite and
    MariaDB backends then score alike)."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(
                f"env.options.backend must be one of {BACKENDS}, got {self.backend!r}"
            )
        if self.reward not in REWARDS:
            raise ConfigError(f"env.options.reward must be one of {REWARDS}, got {self.reward!r}")
        if min(self.max_result_rows, self.max_result_bytes, self.observation_rows) < 1 or not (
            self.timeout_s > 0
        ):
            raise ConfigError(
                "env.options.timeout_s, max_result_rows, max_result_bytes and observation_rows "
                "must be positive"
            )


SPEC = register_env(
    "intercode_sql",
    "ipr_lightning.envs.intercode_sql.handle:build_intercode_sql",
    options=SqlOptions,
    step_tau=0.1,
    splits=("train", "test", "all"),
    eval_split="test",
    action_end=SQL_ACTION_END,
)
