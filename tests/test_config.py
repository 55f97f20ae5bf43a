"""Config schema, YAML + override loading, one-line errors, shipped configs and sweep file."""

from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
import yaml

from ipr_lightning.bench.plan import cell_config, load_bench
from ipr_lightning.config import (
    ConfigError,
    RunConfig,
    describe,
    field_docs,
    load_config,
    normalise_overrides,
    save_config,
)
from ipr_lightning.envs import env_spec

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_precedence_schema_then_yaml_then_overrides(tmp_path):
    path = write(tmp_path, "optim: {lr: 0.5}\nmodel: {dtype: bfloat16}\n")
    cfg = load_config(path, ["optim.lr=0.25"])
    assert isinstance(cfg, RunConfig)
    assert cfg.optim.lr == 0.25  # override beats YAML
    assert cfg.model.dtype == "bfloat16"  # YAML beats schema
    assert cfg.loss.beta == 0.1  # schema default


def test_wandb_sweep_override_form():
    cfg = load_config(None, ["--optim.lr=0.125", "model.lora.r=4"])
    assert cfg.optim.lr == 0.125 and cfg.model.lora.r == 4
    assert normalise_overrides(["--a.b=1", "c=2"]) == ["a.b=1", "c=2"]


@pytest.mark.parametrize(
    ("yaml_text", "overrides", "needle"),
    [
        ("optim: {lrr: 1.0}\n", [], "optim.lrr"),
        ("", ["model.nmae=x"], "model.nmae"),
        ("", ["optim.lr=fast"], "optim.lr"),
        ("trainer: {max_epochs: [1, 2]}\n", [], "trainer.max_epochs"),
        ("", ["model.dtype=fp8"], "model.dtype"),
        ("", ["model.quantization=nf4", "model.lora.enabled=false"], "nf4"),
        ("", ["loss.nll_on=everything"], "loss.nll_on"),
        ("", ["optim"], "key=value"),
        # values that were accepted silently or ended in a traceback deep inside (#16)
        ("model: tiny-random\n", [], "'model': a section of settings"),
        ("model: {lora: 8}\n", [], "'model.lora': a section of settings"),
        ("", ["optim.lr=-1"], "optim.lr"),
        ("", ["model.attn_implementation=bogus"], "model.attn_implementation"),
        ("", ["trainer.checkpoint_every_n_steps=-1"], "trainer.checkpoint_every_n_steps"),
        ("", ["optim.lr=0"], "optim.lr"),
        ("", ["data.batch_size=0"], "data.batch_size"),
        ("", ["trainer.precision=17"], "trainer.precision"),
        ("", ["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches"),
        ("", ["trainer.max_epochs=-5"], "trainer.max_epochs"),
        ("", ["trainer.max_epochs=-1"], "trainer.max_epochs"),
        ("", ["trainer.max_steps=0"], "trainer.max_steps"),
        ("", ["loss.beta=-0.1"], "loss.beta"),
        ("", ["ipr.tau_traj=1.5"], "ipr.tau_traj"),
        ("", ["ipr.tau_step=-0.2"], "ipr.tau_step"),
        ("", ["eval.temperature=-1"], "eval.temperature"),
        ("", ["eval.max_new_tokens=0"], "eval.max_new_tokens"),
        ("", ["eval.batch_size=0"], "eval.batch_size"),
        ("", ["ipr.iterations=1", "eval.split=train"], "held-out split"),
        ("", ["env.options.max_result_bytes=0"], "max_result_bytes"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path, yaml_text, overrides, needle):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, yaml_text), overrides)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


def test_missing_and_invalid_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "a: [1, 2\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))


def test_saved_config_loads_back_identically(tmp_path):
    cfg = load_config(None, ["optim.lr=0.001", "model.lora.target_modules=[q_proj,v_proj]"])
    save_config(cfg, tmp_path / "out" / "config.yaml")
    assert load_config(tmp_path / "out" / "config.yaml") == cfg


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads(path):
    if path.name.startswith("bench_"):  # a run config plus a `bench:` section
        bench, raw = load_bench(path)
        cfg = cell_config(bench, raw, path, bench.seeds[0], "ipr")
        command = "ipr-bench"
    else:
        cfg, command = load_config(path), "ipr-fit"
    assert cfg.output_dir
    first_comment = path.read_text().split(command, 1)
    assert len(first_comment) == 2, f"{path.name} should say the command that runs it"


@pytest.mark.parametrize("name", ["alfworld.yaml", "webshop.yaml", "intercode_sql.yaml"])
def test_the_papers_configs_run_ipr_with_the_authors_dpo_settings(name):
    """They ran SFT only while their comments called them the paper's setup."""
    ipr = load_config(ROOT / "configs" / name).ipr
    assert ipr.iterations >= 1 and ipr.mc_samples == 5 and ipr.lr == 3e-6
    assert (ipr.epochs, ipr.schedule, ipr.warmup_ratio) == (3, "constant", 0.1)


def test_every_field_has_a_docstring():
    def walk(cls):
        docs = field_docs(cls)
        for f in fields(cls):
            assert docs.get(f.name), f"{cls.__name__}.{f.name} has no docstring"
            default = getattr(cls(), f.name)
            if is_dataclass(default):
                walk(type(default))

    walk(RunConfig)
    for name in ("toy", "alfworld", "intercode_sql", "webshop"):
        walk(env_spec(name).options)
    lines = describe()
    assert any(
        line.startswith("env.options.backend = 'sqlite'  (env.name=intercode_sql)")
        for line in lines
    )
    assert any(line.startswith("optim.lr = ") for line in lines)
    assert any(line.startswith("model.lora.r = ") for line in lines)


def test_sweep_files_run_ipr_fit_with_valid_keys():
    sweeps = sorted((ROOT / "configs" / "sweeps").glob("*.yaml"))
    assert sweeps
    for path in sweeps:
        sweep = yaml.safe_load(path.read_text())
        assert sweep["method"] in ("grid", "random", "bayes")
        assert sweep["command"][0] == "ipr-fit" and "${args}" in sweep["command"]
        assert sweep["metric"]["goal"] in ("minimize", "maximize")
        fixed = [a for a in sweep["command"] if "=" in a]
        for key, spec in sweep["parameters"].items():
            value = spec["values"][0] if "values" in spec else spec["min"]
            # What the agent would append: --key=value, as an override after the fixed ones.
            cfg = load_config(ROOT / sweep["command"][2], [*fixed, f"--{key}={value}"])
            assert cfg is not None


@pytest.mark.parametrize(
    "value", ["eager", "sdpa", "flash_attention_2", "paged|sdpa", "kernels-community/flash-attn"]
)
def test_attn_implementations_transformers_knows_are_accepted(value):
    assert load_config(None, [f"model.attn_implementation={value}"])
