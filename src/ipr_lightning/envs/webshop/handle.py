"""`build_webshop(cfg.env, split)`: the WebShop-style `EnvHandle` (registered in
`__init__.py`, options `WebShopOptions` under `env.options`).

Goals are numbered as WebShop numbers its sessions: `fixed_0`, `fixed_1`, ... The test split
is goals 0 .. n_test-1, the train split n_train goals from `env.options.train_start`.

- Embedded (default): a catalogue of `env.options.n_products` products and its goals are
  generated from `env.options.seed` (`webshop_catalog`), once per process.
- `env.options.server_url`: episodes run on a WebShop server through its pages
  (`webshop_client`); the expert plays there too.

Expert trajectories come from the scripted `ExpertShopper`; like WebShop's human
demonstrations they do not all reach 1.0. Those with reward 0 (nothing bought, or a product
of the wrong type) are left out of the expert data, with a warning.
"""

from __future__ import annotations

import logging
import random
from functools import lru_cache

from ipr_lightning.config import ConfigError, EnvConfig
from ipr_lightning.data.records import Trajectory, Turn
from ipr_lightning.envs.base import EnvHandle, TextEnv, example_turns
from ipr_lightning.envs.webshop import SPLITS, WebShopOptions
from ipr_lightning.envs.webshop.shop import Goal, Shop

log = logging.getLogger("ipr_lightning")


def goal_ids(cfg: WebShopOptions, split: str) -> list[str]:
    if split not in SPLITS:
        raise ConfigError(f"unknown WebShop split {split!r}; expected one of {SPLITS}")
    if split == "test":
        return [f"fixed_{i}" for i in range(cfg.n_test)]
    start = cfg.first_train_goal()
    if start < cfg.n_test:
        raise ConfigError(
            f"env.options.train_start={start} overlaps the {cfg.n_test} test goals (0..)"
        )
    return [f"fixed_{i}" for i in range(start, start + cfg.n_train)]


@lru_cache(maxsize=2)
def embedded_shop(n_products: int, n_goals: int, seed: int) -> tuple[Shop, dict[str, Goal]]:
    """The generated catalogue and goals (`fixed_i` -> goal i), cached per process."""
    from ipr_lightning.envs.webshop.catalog import generate_catalog

    try:
        products, goals = generate_catalog(n_products, n_goals, seed)
    except ValueError as exc:
        raise ConfigError(f"env.options: {exc}") from None
    return Shop(products), {f"fixed_{i}": g for i, g in enumerate(goals)}


def build_webshop(cfg: EnvConfig, split: str) -> EnvHandle:
    from ipr_lightning.envs.webshop.agents import ExpertShopper, play, shopper_seed

    ws: WebShopOptions = cfg.options
    ids = goal_ids(ws, split)
    group_of = None
    if ws.server_url:
        from ipr_lightning.envs.webshop.client import WebShopServerEnv

        def make_env() -> TextEnv:
            return WebShopServerEnv(ws.server_url, ids, cfg.max_turns, ws.timeout_s)

        try:  # fail early, in one line, when the server is not there
            make_env().reset(options={"task_id": ids[0] if ids else "fixed_0"})
        except (ConnectionError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
        first_train = goal_ids(ws, "train")[:1]

        def make_train_env() -> TextEnv:
            return WebShopServerEnv(ws.server_url, first_train, cfg.max_turns, ws.timeout_s)

    else:
        from ipr_lightning.envs.webshop.env import WebShopEnv

        n_goals = max(ws.n_test, ws.first_train_goal() + ws.n_train)
        if n_goals > ws.n_products:
            raise ConfigError(
                f"env.options: goals fixed_0..fixed_{n_goals - 1} need {n_goals} target "
                f"products, but env.options.n_products is {ws.n_products}"
            )
        shop, goals = embedded_shop(ws.n_products, n_goals, ws.seed)
        split_goals = {i: goals[i] for i in ids}

        def make_env() -> TextEnv:
            return WebShopEnv(shop, split_goals, cfg.max_turns)

        def make_train_env() -> TextEnv:
            return WebShopEnv(shop, goals, cfg.max_turns)

        def group_of(task_id: str) -> str:
            return goals[task_id].category

    example: list[Turn] | None = None
    if cfg.in_context_example:  # a train goal, never an evaluation one
        first = goal_ids(ws, "train")[0]
        shopper = ExpertShopper(random.Random(shopper_seed(first)))
        example = example_turns(play(make_train_env(), first, shopper))

    def expert() -> list[Trajectory]:
        return expert_data(make_env(), ids, example)

    return EnvHandle(
        "webshop", split, make_env, ids, expert, lambda task_id: example, group_of=group_of
    )


def expert_data(env: TextEnv, ids: list[str], example: list[Turn] | None) -> list[Trajectory]:
    """The expert shopper's trajectories of the goals; reward-0 ones are left out."""
    from tqdm.auto import tqdm

    from ipr_lightning.envs.webshop.agents import ExpertShopper, play, shopper_seed

    played = [
        play(env, task_id, ExpertShopper(random.Random(shopper_seed(task_id))), example)
        for task_id in tqdm(ids, desc="webshop expert", leave=False)
    ]
    env.close()
    kept = [t for t in played if t.reward > 0]
    if played:
        rewards = [t.reward for t in played]
        log.info(
            "WebShop-style expert: %d goals, average reward %.3f, %.0f%% at 1.0, %d at 0 "
            "(left out)",
            len(played),
            sum(rewards) / len(rewards),
            100 * sum(r == 1.0 for r in rewards) / len(rewards),
            len(played) - len(kept),
        )
    return kept
