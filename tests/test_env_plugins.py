"""Environments as plug-ins: packages outside the repository, found through the entry-point
group or as `env.name: package.module:builder`, trained with the stock `ipr-fit` and evaluated
with the stock `ipr-eval`, with their own typed options and their own tau; the registry's
errors; `ipr-data check-env`; and the import boundaries of the env packages."""

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ipr_lightning.config import ConfigError, EnvConfig, RunConfig, load_config
from ipr_lightning.data.io import write_trajectories
from ipr_lightning.data.records import Turn
from ipr_lightning.data_cli import main as ipr_data
from ipr_lightning.envs import build_env, env_spec, register_env

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "ipr_lightning"
BIN = Path(sys.executable).parent

# A whole environment in one module: a counter to bring to a target with `add 1` / `add 5`,
# then `submit` (reward 1 when the counter shows the target). NAME and TAU are filled in.
PLUGIN = '''
"""A counting game: reach the target with `add 1` and `add 5`, then `submit`."""

from dataclasses import dataclass

from ipr_lightning.config import ConfigError
from ipr_lightning.envs import EnvHandle, TextEnv, record_episode, register_env


@dataclass
class CounterOptions:
    n_train: int = 4
    n_test: int = 2
    max_target: int = 12

    def __post_init__(self):
        if self.max_target < 2:
            raise ConfigError(f"env.options.max_target must be >= 2, got {self.max_target}")


class CounterEnv(TextEnv):
    instruction = (
        "Bring the counter to the target number. Actions: add 1, add 5, submit. "
        "Answer as: Thought: ...\\nAction: ..."
    )

    def __init__(self, targets, max_turns):
        super().__init__()
        self.targets, self.max_turns, self.value = targets, max_turns, 0

    def task_ids(self):
        return list(self.targets)

    def _reset(self, task_id):
        self.value = 0
        return f"The counter shows 0. Your target is {self.targets[task_id]}.", {}

    def _step(self, action):
        if action == "submit":
            return "Submitted.", float(self.value == self.targets[self.task_id]), True, {}
        if action in ("add 1", "add 5"):
            self.value += int(action.split()[1])
            return f"The counter shows {self.value}.", 0.0, False, {}
        return self.invalid_observation, 0.0, False, {}


def expert_actions(target):
    fives, ones = divmod(target, 5)
    return ["add 5"] * fives + ["add 1"] * ones + ["submit"]


def build(cfg, split):
    opts = cfg.options
    n, offset = (opts.n_train, 0) if split == "train" else (opts.n_test, 5)
    targets = {f"{split}-{i}": 2 + (offset + 7 * i) % (opts.max_target - 1) for i in range(n)}

    def make_env():
        return CounterEnv(targets, cfg.max_turns)

    def expert():
        env, records = make_env(), []
        for task_id, target in targets.items():
            actions = iter(expert_actions(target))

            def next_output(obs, info):
                action = next(actions, None)
                return None if action is None else f"Thought: count on.\\nAction: {action}"

            records.append(record_episode(env, task_id, next_output))
        return records

    return EnvHandle(NAME, split, make_env, list(targets), expert)


SPEC = register_env(
    NAME, build, options=CounterOptions, step_tau=TAU, splits=("train", "test")
)
'''


def plugin_source(name: str, tau: float) -> str:
    return (
        PLUGIN.replace("NAME, build", f"{name!r}, build")
        .replace("EnvHandle(NAME", f"EnvHandle({name!r}")
        .replace("step_tau=TAU", f"step_tau={tau}")
    )


@pytest.fixture(scope="module")
def plugins(tmp_path_factory) -> dict:
    """An installed distribution with an entry point (`counter`, tau 0.25) and a plain module
    on the path (`plain_counter`, tau 0.3, selected as `ipr_plain_counter:build`)."""
    root = tmp_path_factory.mktemp("plugins")
    src = root / "ipr-counter"
    (src / "ipr_counter").mkdir(parents=True)
    (src / "ipr_counter" / "__init__.py").write_text(plugin_source("counter", 0.25))
    (src / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [build-system]
            requires = ["setuptools>=70.1"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "ipr-counter"
            version = "0.1.0"

            [project.entry-points."ipr_lightning.envs"]
            counter = "ipr_counter"

            [tool.setuptools]
            packages = ["ipr_counter"]
            """
        )
    )
    site = root / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
         "--no-index", "--quiet", "--target", str(site), str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (site / "ipr_counter").is_dir()
    plain = root / "plain"
    plain.mkdir()
    (plain / "ipr_plain_counter.py").write_text(plugin_source("plain_counter", 0.3))
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "PYTHONPATH": os.pathsep.join([str(site), str(plain), os.environ.get("PYTHONPATH", "")]),
    }
    return {"root": root, "env": env}


def _fit(plugins, tiny_model_cfg, out: Path, env_name: str, *extra: str):
    args = [
        str(BIN / "ipr-fit"), "--config", str(ROOT / "configs/tiny.yaml"), f"output_dir={out}",
        f"model.cache_dir={tiny_model_cfg.cache_dir}", f"env.name={env_name}",
        "env.options.n_train=3", "env.options.n_test=2", "env.options.max_target=9",
        "env.max_turns=8", "data.train_file=env:expert", "data.batch_size=2",
        "data.val_fraction=0", "trainer.max_epochs=1", "ipr.iterations=1", "ipr.epochs=1",
        "ipr.mc_samples=1", "ipr.max_new_tokens=8", "eval.max_new_tokens=8", *extra,
    ]  # fmt: skip
    return subprocess.run(args, env=plugins["env"], capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize(("env_name", "tau"), [("counter", 0.25), ("ipr_plain_counter:build", 0.3)])
def test_an_outside_env_trains_and_evaluates_with_the_stock_clis(
    plugins, tiny_model_cfg, tmp_path, env_name, tau
):
    out = tmp_path / "run"
    proc = _fit(plugins, tiny_model_cfg, out, env_name)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"tau_step={tau:g} (" in proc.stderr  # the env's own tau, not a default
    phases = [json.loads(line) for line in (out / "phases.jsonl").read_text().splitlines()]
    assert [p["phase"] for p in phases] == ["sft", "iteration 1"]
    assert all(p["episodes"] == 2 for p in phases)  # env.options.n_test=2 test tasks
    experts = json.loads((out / "expert_trajectories.json").read_text())
    assert len(experts) == 3 and all(r["reward"] == 1.0 for r in experts)  # n_train=3
    stats = json.loads((out / "iter_1" / "stats.json").read_text())
    assert stats["pairs/outcome"] + stats["pairs/step"] > 0
    saved = (out / "config.yaml").read_text()
    assert f"name: {env_name}" in saved and "max_target: 9" in saved

    evaluated = subprocess.run(
        [str(BIN / "ipr-eval"), "--run", str(out), "eval.max_new_tokens=8"],
        env=plugins["env"], capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-4000:]
    assert "test" in evaluated.stdout


def test_an_outside_envs_options_are_typed_and_checked(plugins, tiny_model_cfg, tmp_path):
    for bad, named in [
        ("env.options.max_target=lots", "env.options.max_target"),
        ("env.options.max_target=1", "env.options.max_target must be >= 2"),
        ("env.options.colour=red", "env.options.colour"),
        ("eval.split=valid_unseen", "'valid_unseen'"),
    ]:
        proc = _fit(plugins, tiny_model_cfg, tmp_path / "bad", "counter", bad)
        assert proc.returncode == 2, (bad, proc.stderr[-2000:])
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and named in lines[0], (bad, proc.stderr[-2000:])


def test_unknown_and_broken_env_names_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"unknown environment 'textworld'; known: \[.*'toy'"):
        load_config(None, ["env.name=textworld"])
    with pytest.raises(ConfigError, match="importing no_such_module"):
        load_config(None, ["env.name=no_such_module:build"])
    (tmp_path / "unregistered_env.py").write_text("def build(cfg, split):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="does not register_env 'build'"):
        load_config(None, ["env.name=unregistered_env:build"])
    (tmp_path / "broken_env.py").write_text("raise RuntimeError('no GPU here')\n")
    with pytest.raises(ConfigError, match="importing broken_env: RuntimeError"):
        load_config(None, ["env.name=broken_env:build"])
    with pytest.raises(ConfigError, match="env.options.n_trian"):
        load_config(None, ["env.options.n_trian=3"])
    with pytest.raises(ConfigError, match="env.options.n_train"):
        load_config(None, ["env.options.n_train=many"])
    with pytest.raises(ConfigError, match="env.train_split: toy has no split 'test'"):
        load_config(None, ["env.train_split=test"])
    with pytest.raises(ValueError, match="step_tau must be in"):
        register_env("broken_tau", "x:y", step_tau=2.0)


def test_shipped_envs_declare_their_defaults_at_registration():
    taus = {name: env_spec(name).step_tau for name in ("alfworld", "webshop", "intercode_sql")}
    assert taus == {"alfworld": 0.5, "webshop": 0.01, "intercode_sql": 0.1}  # the paper's
    assert RunConfig().ipr.step_tau("toy") == 0.5
    assert load_config(None, ["env.name=webshop"]).eval.split == "test"
    assert load_config(None, ["env.name=alfworld"]).eval.split == "valid_unseen"
    assert env_spec("alfworld").task_key == "game_file"
    handle = build_env(EnvConfig(options={"n_train": 2}), "train")
    assert handle.spec is env_spec("toy") and handle.action_end is env_spec("toy").action_end


def test_check_env_passes_on_the_shipped_envs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name, *options in [
        ("toy", "env.options.n_train=12"),
        ("webshop", "env.options.n_products=300", "env.options.n_train=12",
         "env.options.n_test=4"),
        ("intercode_sql", "env.options.test_size=5"),
    ]:  # fmt: skip
        assert ipr_data(["check-env", name, *options, "--no-progress"]) == 0, name
        last = capsys.readouterr().out.strip().splitlines()[-1]
        assert f"check-env {name} train: " in last and "replay exactly" in last
        count = last.split(": ")[1].split()
        assert count[0] == count[2] != "0", last  # every record replays


def test_check_env_fails_in_one_line_per_broken_record(tmp_path, capsys):
    records = build_env(EnvConfig(options={"n_train": 5}), "train").expert()
    records[1].turns[4] = Turn("user", "Observation: nothing here")
    records[2].reward = 0.5
    records[3].turns[3] = Turn("assistant", "Thought: hm\nAction: fly away")
    path = tmp_path / "broken.json"
    write_trajectories(path, records)
    assert ipr_data(["check-env", "toy", "env.options.n_train=5", f"--file={path}"]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 4 and out[-1].startswith("check-env toy train: 2 of 5")
    assert out[0].startswith(f"{path}: record 1 (id 'toy-0-1'): conversations[4]: observation")
    assert out[1].startswith(f"{path}: record 2 (id 'toy-0-2'): field reward: the record says 0.5")
    assert out[2].startswith(f"{path}: record 3 (id 'toy-0-3'): conversations[3]: the env rejects")


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


ENV_PACKAGES = ("toy", "alfworld", "intercode_sql", "webshop")


def test_only_env_packages_and_clis_import_env_packages():
    """The trainer's core reaches environments only through the registry."""
    core = [
        *(PACKAGE / d for d in ("rollout", "ipr", "lightning", "data")),
        ROOT / "callbacks",
        PACKAGE / "losses.py",
    ]
    files = [f for c in core for f in ([c] if c.is_file() else sorted(c.rglob("*.py")))]
    assert len(files) > 10
    for path in files:
        bad = [
            m
            for m in _imports(path)
            if any(m.startswith(f"ipr_lightning.envs.{p}") for p in ENV_PACKAGES)
        ]
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_env_packages_import_alone_and_without_a_cycle():
    modules = {}
    for path in sorted((PACKAGE / "envs").rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = _imports(path)
    for name, imports in modules.items():
        for pkg in ENV_PACKAGES:
            own = name.startswith(f"ipr_lightning.envs.{pkg}")
            other = [m for m in imports if m.startswith(f"ipr_lightning.envs.{pkg}")]
            assert own or not other, f"{name} imports another env package: {other}"
    # no cycle among the env modules (an edge: a module imports another one of them)
    edges = {
        name: {m for m in imports if m in modules and m != name}
        for name, imports in modules.items()
    }
    for name in modules:  # a package's own submodules import their __init__ by design
        edges[name] = {m for m in edges[name] if not name.startswith(m + ".")}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in edges[node]:
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join([*trail, node, nxt])}"
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for name in modules:
        if name not in state:
            visit(name, [])
    for pkg in ENV_PACKAGES:  # and each one imports by itself, in a fresh interpreter
        proc = subprocess.run(
            [sys.executable, "-c", f"import ipr_lightning.envs.{pkg} as p; print(p.SPEC.name)"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0 and proc.stdout.strip() == pkg, proc.stderr[-2000:]
