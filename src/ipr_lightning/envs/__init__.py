"""Text environments (Gymnasium-shaped) the agent acts in, and the public API for adding one.

    from ipr_lightning.envs import EnvHandle, TextEnv, register_env

- `TextEnv`: the base class of an environment (`reset`/`step`, parsing, turn limits);
- `EnvHandle`: what an environment's builder returns for one split;
- `register_env(name, builder, options=..., step_tau=..., splits=...)`: make it selectable
  as `env.name`; plug-ins are found through the `ipr_lightning.envs` entry-point group or
  as `env.name: package.module:builder`;
- `build_env(cfg.env, split)`, `env_spec(name)`: how the trainer gets them;
- `build_prompt`, `record_episode`, `example_turns`: the conversation layout every stage uses.

Each shipped environment is one package here (`toy`, `alfworld`, `intercode_sql`,
`webshop`); this module imports none of them.
"""

from ipr_lightning.envs.base import (
    ACTION_LINE_RE,
    EnvHandle,
    ParsedOutput,
    TextEnv,
    build_prompt,
    env_cache_dir,
    example_turns,
    parse_react,
    record_episode,
)
from ipr_lightning.envs.registry import EnvSpec, build_env, env_spec, register_env

__all__ = [
    "ACTION_LINE_RE",
    "EnvHandle",
    "EnvSpec",
    "ParsedOutput",
    "TextEnv",
    "build_env",
    "build_prompt",
    "env_cache_dir",
    "env_spec",
    "example_turns",
    "parse_react",
    "record_episode",
    "register_env",
]
