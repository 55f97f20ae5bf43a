"""Which environments exist: `register_env`, `env_spec(name)` and `build_env(cfg.env, split)`.

An environment registers itself once, at import, with everything the trainer needs to know
about it besides its episodes:

    register_env(
        "cooking",                        # the `env.name` that selects it
        "my_pkg.cooking:build",           # builder(cfg.env, split) -> EnvHandle (or the callable)
        options=CookingOptions,           # dataclass of its settings, under `env.options`
        step_tau=0.5,                     # tau of its step pairs (MC step-value margin)
        splits=("train", "valid", "test"),
    )

`env_spec(name)` finds a registration in this order: already registered; one of the four
shipped environments (their packages register on import); a plug-in named `name` in the
`ipr_lightning.envs` entry-point group (loading it imports the module that registers it);
`package.module:builder`, whose module registers the builder on import. Anything else is
one `ConfigError` listing the known names.

The registry holds no environment code: importing it imports no environment package.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, is_dataclass, replace
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ipr_lightning.config import ConfigError
from ipr_lightning.envs.base import ACTION_LINE_RE, EnvHandle

if TYPE_CHECKING:
    from ipr_lightning.config import EnvConfig

ENTRY_POINT_GROUP = "ipr_lightning.envs"
SHIPPED = {
    "toy": "ipr_lightning.envs.toy",
    "alfworld": "ipr_lightning.envs.alfworld",
    "intercode_sql": "ipr_lightning.envs.intercode_sql",
    "webshop": "ipr_lightning.envs.webshop",
}
"""The shipped environments and the package whose import registers each."""
DEFAULT_SPLITS = ("train", "valid_seen", "valid_unseen")

Builder = Callable[["EnvConfig", str], EnvHandle]


@dataclass(frozen=True)
class EnvSpec:
    """One environment's registration (see `register_env`)."""

    name: str
    builder: Builder | str
    options: type | None
    step_tau: float
    splits: tuple[str, ...]
    task_key: str
    action_end: re.Pattern[str] | None
    eval_split: str

    def load_builder(self) -> Builder:
        if callable(self.builder):
            return self.builder
        module, _, attr = self.builder.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"env {self.name!r}: cannot load its builder {self.builder!r}: {exc}"
            ) from None

    def parse_options(self, raw: Any) -> Any:
        """`env.options` as this env's typed options (defaults filled in), or one-line
        `ConfigError` naming the key; an instance of the options class is returned as is."""
        if self.options is None:
            if raw:
                raise ConfigError(f"env.options: {self.name!r} takes no options, got {raw}")
            return None
        if isinstance(raw, self.options):
            return raw
        if is_dataclass(raw):
            raw = OmegaConf.to_container(OmegaConf.structured(raw))
        if raw is not None and not isinstance(raw, dict):
            raise ConfigError(f"env.options: a mapping of {self.name!r}'s settings, got {raw!r}")
        try:
            merged = OmegaConf.merge(OmegaConf.structured(self.options), raw or {})
            return OmegaConf.to_object(merged)
        except OmegaConfBaseException as exc:
            key = getattr(exc, "full_key", None) or "?"
            reason = str(exc).splitlines()[0]
            raise ConfigError(f"bad config key 'env.options.{key}': {reason}") from None

    def task_of(self, record: Any) -> str:
        """The task an expert record plays: its `task_key` field (its id by default)."""
        if self.task_key == "id":
            return str(record.id)
        return str(record.meta.get(self.task_key, record.id))


_REGISTRY: dict[str, EnvSpec] = {}


def register_env(
    name: str,
    builder: Builder | str,
    *,
    step_tau: float,
    options: type | None = None,
    splits: tuple[str, ...] | list[str] = DEFAULT_SPLITS,
    eval_split: str | None = None,
    task_key: str = "id",
    action_end: re.Pattern[str] | None = ACTION_LINE_RE,
) -> EnvSpec:
    """Make `name` selectable as `env.name`.

    - `builder(cfg_env, split) -> EnvHandle`, or `"package.module:function"` (imported on the
      first build, so registering stays cheap). `cfg_env.options` is already the typed
      options; `cfg_env.max_turns`, `in_context_example`, `train_split` are the shared ones.
    - `options`: a dataclass of the env's settings (`env.options.*`, checked like every other
      key: unknown keys and wrong types are one-line errors); its `__post_init__` may raise
      `ConfigError` for bad values. None: the env takes no options.
    - `step_tau`: the step-value margin of its step pairs (the paper: ALFWorld 0.5, WebShop
      0.01, InterCodeSQL 0.1); `ipr.tau_step` overrides it.
    - `splits`: its split names (`env.train_split` and the evaluation splits must be among them).
    - `eval_split`: the default `eval.split` (unset: the last of `splits`).
    - `task_key`: the field of an expert record naming its task (`id`, or a field of the
      record such as ALFWorld's `game_file`).
    - `action_end`: what a finished action looks like (generation stops there); None: the
      model's end of turn.

    Registering a name again replaces it (a reloaded module)."""
    if not re.fullmatch(r"[A-Za-z_][\w.\-]*(:[A-Za-z_]\w*)?", name):
        raise ValueError(f"register_env: {name!r} is not a usable env name")
    if not 0.0 <= step_tau <= 1.0:
        raise ValueError(f"register_env({name!r}): step_tau must be in [0, 1], got {step_tau}")
    if options is not None and not (isinstance(options, type) and is_dataclass(options)):
        raise ValueError(f"register_env({name!r}): options must be a dataclass, got {options!r}")
    if not splits or (eval_split is not None and eval_split not in splits):
        raise ValueError(
            f"register_env({name!r}): splits must name at least one split and "
            "eval_split must be one of them"
        )
    spec = EnvSpec(
        name,
        builder,
        options,
        step_tau,
        tuple(splits),
        task_key,
        action_end,
        eval_split or splits[-1],
    )
    _REGISTRY[name] = spec
    return spec


def _known() -> list[str]:
    found = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(set(_REGISTRY) | set(SHIPPED) | found)


def _unknown(name: str, why: str = "") -> ConfigError:
    return ConfigError(
        f"env.name: unknown environment {name!r}{why}; known: {_known()} (a plug-in registers "
        f"itself with ipr_lightning.envs.register_env, found through the {ENTRY_POINT_GROUP!r} "
        "entry-point group or as env.name=package.module:builder)"
    )


def _from_module(name: str) -> EnvSpec:
    """`package.module:builder` (or `package.module:SPEC`): import, then find the spec."""
    module, _, attr = name.partition(":")
    try:
        loaded = importlib.import_module(module)
    except ImportError as exc:
        raise _unknown(name, f" (importing {module}: {exc})") from None
    except Exception as exc:  # a broken plug-in module: say which, never a deep traceback
        raise ConfigError(f"env.name={name}: importing {module}: {exc!r}") from None
    target = getattr(loaded, attr, None)
    if target is None:
        raise _unknown(name, f" ({module} has no {attr!r})")
    if isinstance(target, EnvSpec):
        return target
    for spec in _REGISTRY.values():
        if spec.builder is target or spec.builder == name:
            return spec
    raise _unknown(name, f" ({module} does not register_env {attr!r})")


def env_spec(name: str) -> EnvSpec:
    """The registration of `name` (see the module docstring for where it is looked up)."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in SHIPPED:
        importlib.import_module(SHIPPED[name])
        return _REGISTRY[name]
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            try:
                loaded = ep.load()
            except Exception as exc:  # a broken plug-in: say which, never a deep traceback
                raise ConfigError(f"env.name={name}: loading plug-in {ep.value!r}: {exc}") from None
            if isinstance(loaded, EnvSpec):
                _REGISTRY.setdefault(name, loaded)
            if name not in _REGISTRY:
                raise _unknown(name, f" (plug-in {ep.value!r} does not register_env {name!r})")
            return _REGISTRY[name]
    if ":" in name:
        spec = _from_module(name)
        _REGISTRY[name] = spec
        return spec
    raise _unknown(name)


def build_env(cfg: EnvConfig, split: str) -> EnvHandle:
    """Everything a stage needs to run episodes of `cfg.name` on `split` (see `EnvHandle`)."""
    spec = env_spec(cfg.name)
    if split not in spec.splits:
        raise ConfigError(f"unknown {spec.name} split {split!r}; expected one of {spec.splits}")
    cfg = replace(cfg, options=spec.parse_options(cfg.options))
    handle = spec.load_builder()(cfg, split)
    if not isinstance(handle, EnvHandle):
        raise ConfigError(f"env {spec.name!r}: its builder returned {handle!r}, not an EnvHandle")
    return replace(handle, spec=spec)
