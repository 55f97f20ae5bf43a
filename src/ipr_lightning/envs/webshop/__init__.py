"""WebShop (`env.name: webshop`): shopping by search and clicks, WebShop's reward, the paper's
prompt; on a generated WebShop-style shop, or on a running WebShop server.

- `env.py`: the env on the embedded shop (`WebShopEnv`); `client.py`: on a WebShop server;
- `shop.py`, `catalog.py`, `vocab.py`: the generated catalogue, its goals and search;
- `reward.py`: WebShop's reward; `agents.py`: the scripted expert shopper;
- `handle.py`: the builder; here: its options (`env.options.*`) and its registration.
"""

from __future__ import annotations

from dataclasses import dataclass

from ipr_lightning.config import ConfigError
from ipr_lightning.envs.registry import register_env

SPLITS = ("train", "test")


@dataclass
class WebShopOptions:
    server_url: str | None = None
    """A running WebShop server (its Flask app, e.g. http://127.0.0.1:3000): episodes are
    played through its pages; unset: the embedded WebShop-style shop."""
    n_products: int = 5000
    """Products in the generated catalogue (embedded shop)."""
    n_train: int = 1624
    """Train goals (paper: 1,624)."""
    n_test: int = 200
    """Test goals (paper: 200): goals fixed_0 .. fixed_{n_test-1}, as WebShop numbers them."""
    train_start: int | None = None
    """Index of the first train goal; unset: right after the test goals (embedded shop) or
    1500 (a WebShop server: its goals 0-499 are test, 500-1499 dev, 1500+ train)."""
    seed: int = 0
    """Seed of the generated catalogue and goals."""
    timeout_s: float = 30.0
    """HTTP timeout of one page request to a WebShop server."""

    def __post_init__(self) -> None:
        if min(self.n_products, self.n_train, self.n_test) < 0 or self.timeout_s <= 0:
            raise ConfigError(
                "env.options.n_products, n_train and n_test must be >= 0 and timeout_s positive"
            )
        if self.train_start is not None and self.train_start < 0:
            raise ConfigError(f"env.options.train_start must be >= 0, got {self.train_start}")

    def first_train_goal(self) -> int:
        if self.train_start is not None:
            return self.train_start
        return 1500 if self.server_url else self.n_test


SPEC = register_env(
    "webshop",
    "ipr_lightning.envs.webshop.handle:build_webshop",
    options=WebShopOptions,
    step_tau=0.01,
    splits=SPLITS,
)
