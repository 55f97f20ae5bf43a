"""`ipr-bench`: cells from one SFT checkpoint per seed, resumable and never rerun, and a report
(tables, CSV, plots) whose structure is checked here (not its numbers: a tiny random model)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ipr_lightning.bench.plan import BenchConfig, load_bench
from ipr_lightning.bench.report import (
    best_and_last,
    cost_table,
    fmt,
    metric_table,
    value_model_table,
)
from ipr_lightning.bench.run import share_rollouts
from ipr_lightning.config import ConfigError, ModelConfig, ScratchConfig
from ipr_lightning.models import build_scratch_model

ROOT = Path(__file__).resolve().parents[1]
IPR_BENCH = str(Path(sys.executable).parent / "ipr-bench")

TINY_BENCH = """\
model: {name_or_path: tiny-random, dtype: float32, lora: {r: 8, alpha: 16, dropout: 0.0}}
data: {train_file: env:expert, val_fraction: 0.0, max_length: 2048, batch_size: 4}
optim: {lr: 1.0e-2}
trainer: {max_epochs: 1, enable_progress_bar: false}
env: {name: toy, max_turns: 10, options: {n_train: 2, n_valid_seen: 2, n_valid_unseen: 2}}
eval: {max_new_tokens: 8}
ipr: {epochs: 1, mc_samples: 2, max_new_tokens: 8}
bench: {name: tiny, seeds: [0], methods: [eto, ipr], iterations: 1}
"""


def bench_cli(config: Path, out: Path, cache_dir: str, *extra: str) -> subprocess.CompletedProcess:
    args = [IPR_BENCH, "--config", str(config), f"bench.out_dir={out}"]
    args += [f"model.cache_dir={cache_dir}", *extra]
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.run(args, capture_output=True, text=True, timeout=900, env=env)


@pytest.fixture(scope="module")
def tiny_bench(tiny_model_cfg, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    config = tmp / "bench.yaml"
    config.write_text(TINY_BENCH)
    done = bench_cli(config, tmp / "out", tiny_model_cfg.cache_dir)
    assert done.returncode == 0, done.stderr[-4000:]
    return config, tmp / "out" / "tiny", done.stdout, tiny_model_cfg.cache_dir


def test_the_report_has_every_table_plot_and_csv_row(tiny_bench):
    config, root, stdout, _ = tiny_bench
    md = (root / "results.md").read_text()
    for heading in (
        "## Success rate (%) on valid_unseen",
        "## Success rate (%) on valid_seen",
        "## Average reward (x100) on valid_unseen",
        "## Pairs, rollouts and wall time per iteration",
        "## Step-value diagnostics",
        "## Agent behaviour on valid_unseen",
        "**Invalid actions (%)**",
        "**Malformed outputs (%)**",
        "**Turns per episode**",
    ):
        assert heading in md
    assert "| method | SFT (it 0) | it 1 | last | best (it) |" in md
    for label in ("| SFT |", "| ETO |", "| IPR |"):
        assert label in md
    assert "(it 1)" in md and "Seeds 0;" in md
    assert f"Command: `ipr-bench --config {config} bench.out_dir=" in md  # with its overrides
    assert md.strip() in stdout  # the command prints the report it wrote
    for png in ("success.png", "pairs.png", "step_values.png"):
        assert (root / png).read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader((root / "results.csv").open()))
    got = {(r["method"], r["iteration"], r["split"]) for r in rows}
    for r in rows:  # the behaviour columns come from each evaluation's summary
        assert 0 <= float(r["invalid_rate"]) <= 1 and 0 <= float(r["malformed_rate"]) <= 1
        assert float(r["avg_turns"]) > 0
    splits = ("valid_unseen", "valid_seen")
    assert got == {("sft", "0", s) for s in splits} | {
        (m, "1", s) for m in ("eto", "ipr") for s in splits
    }
    diag = json.loads((root / "diagnostics.json").read_text())
    assert [d["method"] for d in diag] == ["ipr"]  # ETO has no step values
    assert {"expert_higher_by_j", "expert_share_of_step_pairs", "corr_value_final_reward"} <= set(
        diag[0]
    )


def test_methods_start_from_the_seeds_sft_checkpoint(tiny_bench):
    """Every method resumes from the SFT cell (same SFT phase row, no SFT retraining); ETO
    explores whole trajectories only and pays for no MC rollout; iteration 1's rollouts are
    the SFT policy's, shared by the methods of the seed."""
    _, root, _, _ = tiny_bench
    seed = root / "seed_0"
    sft_row = (seed / "sft" / "phases.jsonl").read_text().splitlines()[0]
    for method in ("eto", "ipr"):
        phases = (seed / method / "phases.jsonl").read_text().splitlines()
        assert phases[0] == sft_row and json.loads(phases[1])["phase"] == "iteration 1"
        assert json.loads(phases[1])["eval"].keys() == {"valid_unseen", "valid_seen"}
    sft_steps = json.loads((seed / "sft" / "summary.json").read_text())["optimizer_steps"]
    ipr_steps = json.loads((seed / "ipr" / "summary.json").read_text())["optimizer_steps"]
    assert 0 < sft_steps < ipr_steps  # went on from SFT's steps

    def episodes(method: str) -> dict:
        lines = (seed / method / "rollouts.jsonl").read_text().splitlines()
        return {tuple(r["key"]): r for r in map(json.loads, lines)}

    eto, ipr = episodes("eto"), episodes("ipr")
    assert {k[1] for k in eto} == {"explore"} and {k[3] for k in eto} == {0}
    assert {"expert_mc", "mc", "explore"} <= {k[1] for k in ipr}
    for key, episode in eto.items():  # the same greedy SFT episode in both cells
        assert ipr[key] == episode
    stats = json.loads((seed / "eto" / "iter_1" / "stats.json").read_text())
    assert stats["pairs/step"] == 0 and stats["explore/mc_episodes"] == 0


def test_a_second_invocation_only_prints_the_report(tiny_bench):
    config, root, _, cache_dir = tiny_bench
    stamps = {p: p.stat().st_mtime_ns for p in root.glob("seed_*/*/cell.json")}
    assert len(stamps) == 3
    again = bench_cli(config, root.parent, cache_dir)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "all 3 cells" in again.stdout and "| IPR |" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in root.glob("seed_*/*/cell.json")} == stamps
    assert len(list(root.glob("seed_0/ipr/logs/version_*"))) == 1  # no new launch


def test_a_changed_config_is_refused_naming_the_keys(tiny_bench):
    """Cells run under other settings are never continued or reported as this bench's;
    logging and progress settings may change."""
    config, root, _, cache_dir = tiny_bench
    changed = bench_cli(config, root.parent, cache_dir, "ipr.mc_samples=3", "optim.lr=0.02")
    assert changed.returncode == 2
    assert "seed_0/sft was run with other settings (optim.lr)" in changed.stderr
    assert len(changed.stderr.strip().splitlines()) == 1
    # the SFT cell runs no iteration: only the method cells were run with other IPR settings
    changed = bench_cli(config, root.parent, cache_dir, "ipr.mc_samples=3")
    assert changed.returncode == 2
    assert "seed_0/eto was run with other settings (ipr.mc_samples)" in changed.stderr
    harmless = bench_cli(config, root.parent, cache_dir, "wandb.project=other")
    assert harmless.returncode == 0, harmless.stderr[-2000:]


def test_a_bench_can_start_from_another_benchs_sft_cells(tiny_bench, tmp_path):
    """bench.sft_from: the methods start from the other bench's SFT checkpoints (read, never
    written) under other preference-phase settings; other SFT settings are refused, and a
    missing SFT cell is a one-line error before anything runs."""
    config, root, _, cache_dir = tiny_bench
    sft = root / "seed_0" / "sft"
    before = {p: p.stat().st_mtime_ns for p in sft.rglob("*") if p.is_file()}
    args = [f"bench.sft_from={root}", "bench.name=sweep", "bench.methods=[eto]", "ipr.lr=5e-5"]
    done = bench_cli(config, tmp_path, cache_dir, *args)
    assert done.returncode == 0, done.stderr[-2000:]
    sweep = tmp_path / "sweep"
    assert not (sweep / "seed_0" / "sft").exists()
    assert {p: p.stat().st_mtime_ns for p in sft.rglob("*") if p.is_file()} == before
    phases = (sweep / "seed_0" / "eto" / "phases.jsonl").read_text().splitlines()
    assert phases[0] == (sft / "phases.jsonl").read_text().splitlines()[0]
    assert json.loads(phases[1])["phase"] == "iteration 1"
    assert "| SFT |" in done.stdout and "| ETO |" in done.stdout and f"`{root}`'s" in done.stdout

    refused = bench_cli(config, tmp_path, cache_dir, *args, "optim.lr=0.02")
    assert refused.returncode == 2 and "seed_0/sft was run with other settings (optim.lr)" in (
        refused.stderr
    )
    missing = bench_cli(config, tmp_path, cache_dir, f"bench.sft_from={tmp_path}", "bench.name=x")
    assert missing.returncode == 2 and "is not a finished SFT cell" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def test_an_interrupted_method_cell_resumes(tiny_bench, tmp_path):
    """A cell without cell.json (killed) is resumed, not restarted: its finished phases are
    kept and the bench completes it."""
    config, root, _, cache_dir = tiny_bench
    copy = tmp_path / "tiny"
    subprocess.run(["cp", "-r", str(root), str(copy)], check=True)
    (copy / "seed_0" / "ipr" / "cell.json").unlink()
    phases = copy / "seed_0" / "ipr" / "phases.jsonl"
    phases.write_text(phases.read_text().splitlines()[0] + "\n")  # killed in its last eval
    done = bench_cli(config, tmp_path, cache_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (copy / "seed_0" / "ipr" / "cell.json").is_file()
    assert len(phases.read_text().splitlines()) == 2
    assert not (copy / "seed_0" / "eto" / "logs" / "version_1").exists()  # ETO not rerun


def test_bench_config_errors_are_one_line(tmp_path):
    config = tmp_path / "b.yaml"
    config.write_text(TINY_BENCH)
    bench, _ = load_bench(config, ["bench.seeds=[3,4]", "--bench.iterations=2"])
    assert bench.seeds == [3, 4] and bench.iterations == 2
    with pytest.raises(ConfigError, match="unknown \\['ppo'\\]"):
        load_bench(config, ["bench.methods=[ppo]"])
    with pytest.raises(ConfigError, match="bench.nope"):
        load_bench(config, ["bench.nope=1"])
    with pytest.raises(ConfigError, match="optim.lr"):
        load_bench(config, ["optim.lr=0"])  # the run config is checked before any work
    with pytest.raises(ConfigError, match="iterations"):
        BenchConfig(iterations=0)


def test_report_tables_label_best_and_last_iterations():
    rows = [
        {"method": "sft", "seed": s, "iteration": 0, "split": "u", "success_rate": x}
        for s, x in ((0, 0.2), (1, 0.4))
    ] + [
        {"method": "ipr", "seed": s, "iteration": k, "split": "u", "success_rate": x}
        for s, k, x in ((0, 1, 0.5), (1, 1, 0.7), (0, 2, 0.3), (1, 2, 0.5))
    ]
    bench = BenchConfig(seeds=[0, 1], methods=["ipr"], iterations=2, splits=["u"])
    table = metric_table(rows, bench, "u", "success_rate", 100.0)
    assert table[0] == "| method | SFT (it 0) | it 1 | it 2 | last | best (it) |"
    assert table[2] == "| SFT | 30.0 ± 14.1 |  |  | 30.0 ± 14.1 (it 0) | 30.0 ± 14.1 (it 0) |"
    assert table[3] == (
        "| IPR | 30.0 ± 14.1 | 60.0 ± 14.1 | 40.0 ± 14.1 | 40.0 ± 14.1 (it 2) | "
        "60.0 ± 14.1 (it 1) |"
    )
    assert best_and_last({0: [0.1], 1: [0.1], 2: [0.0]}) == (0, 2)  # ties: the earliest
    assert fmt([0.25]) == "25.0" and fmt([]) == "-" and fmt([0.1, 0.3], n=3) == "20.0 ± 14.1 (n=2)"
    unranked = metric_table(rows, bench, "u", "success_rate", 100.0, ranked=False)
    assert unranked[0] == "| method | SFT (it 0) | it 1 | it 2 |"  # no best / last
    assert unranked[3] == "| IPR | 30.0 ± 14.1 | 60.0 ± 14.1 | 40.0 ± 14.1 |"
    rows = [r for r in rows if r["seed"] == 0 or r["iteration"] < 2]  # seed 1 not done yet
    assert "| 30.0 ± 14.1 | 60.0 ± 14.1 | 30.0 (n=1) | 30.0 (n=1) (it 2) |" in "\n".join(
        metric_table(rows, bench, "u", "success_rate", 100.0)
    )


def test_cost_and_value_model_tables_by_hand():
    base = {"split": "u", "pairs_trained": 4, "explore_episodes": 9, "mc_episodes": 6}
    base |= {"expert_mc_total": 10, "generated_tokens": 500, "explore_seconds": 30.0}
    base |= {"train_seconds": 5.0, "eval_seconds": 2.0, "values_predicted": None}
    base |= {"values_heldout_mse": None, "values_heldout_mse_constant": None}
    base |= {"values_heldout_agreement": None}
    rows = [
        base
        | {"method": "ipr", "seed": s, "iteration": 1, "pairs_outcome": 2}
        | {"pairs_step": p, "scorer_episodes": n, "scorer_tokens": 10 * n}
        | {"scorer_seconds": n / 10}
        for s, p, n in ((0, 2, 20), (1, 8, 50))  # 4 and 10 pairs: 5.0 and 5.0 per pair
    ]
    bench = BenchConfig(seeds=[0, 1], methods=["ipr"], iterations=1, splits=["u"])
    line = next(r for r in cost_table(rows, bench) if r.startswith("| IPR | 1 |"))
    assert "| 35 (5.0) | 350 (50) | 4 (0.50) |" in line  # means over seeds, then per pair
    assert value_model_table(rows, bench) == []  # no iteration used a value model
    rows[0] |= {"values_heldout_mse": 0.1, "values_heldout_mse_constant": 0.2}
    rows[0] |= {"values_heldout_agreement": 0.75}
    table = value_model_table(rows, bench)
    assert table[2] == "| IPR | 1 | 0.1000 (n=1) | 0.2000 (n=1) | 75.0 (n=1) |"


def test_shared_rollouts_are_iteration_0_and_1_only_never_twice(tmp_path):
    def line(key: list) -> str:
        return json.dumps({"key": key, "reward": 1.0})

    a, b, target = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "t.jsonl"
    torn = '{"key": [1, "mc"'
    lines = [line([0, "expert_mc", "t", 2, 0]), line([1, "explore", "t", 0, 0])]
    a.write_text("\n".join([*lines, line([2, "explore", "t", 0, 0]), torn]) + "\n")
    b.write_text(line([1, "explore", "t", 0, 0]) + "\n" + line([1, "mc", "t", 1, 0]) + "\n")
    target.write_text(line([1, "mc", "t", 1, 0]) + "\n")
    assert share_rollouts([a, b, tmp_path / "missing.jsonl"], target) == 2
    keys = [json.loads(x)["key"] for x in target.read_text().splitlines()]
    assert keys == [[1, "mc", "t", 1, 0], [0, "expert_mc", "t", 2, 0], [1, "explore", "t", 0, 0]]
    assert share_rollouts([a, b], target) == 0


def test_scratch_model_gets_a_tokenizer_trained_on_the_env_text(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    text = ["You arrive at countertop 1. On the countertop 1, you see a apple 1."] * 50
    spec = ScratchConfig(vocab_size=400, hidden_size=32, num_layers=1, num_heads=2,
                         intermediate_size=64)  # fmt: skip
    folder = build_scratch_model(tmp_path / "m", text, spec, seed=3)
    tok = AutoTokenizer.from_pretrained(folder)
    assert len(tok.encode(" countertop", add_special_tokens=False)) == 1  # learned word
    assert tok.decode(tok.encode("zebra ~ 7", add_special_tokens=False)) == "zebra ~ 7"  # bytes
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.hidden_size == 32 and model.config.vocab_size == len(tok)
    again = build_scratch_model(tmp_path / "m2", text, spec, seed=3)
    w1 = model.state_dict()["model.embed_tokens.weight"]
    w2 = AutoModelForCausalLM.from_pretrained(again).state_dict()["model.embed_tokens.weight"]
    assert (w1 == w2).all()  # seeded
    with pytest.raises(ConfigError, match="multiple of num_heads"):
        ScratchConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ConfigError, match="no expert text"):
        build_scratch_model(tmp_path / "m3", [], spec, seed=0)
    assert ModelConfig(name_or_path="scratch").scratch.hidden_size == 256


def test_a_scratch_model_is_trained_in_full(tmp_path):
    from ipr_lightning.cli import scratch_model
    from ipr_lightning.config import RunConfig
    from ipr_lightning.data.records import Trajectory, Turn

    cfg = RunConfig(output_dir=str(tmp_path), model=ModelConfig(name_or_path="scratch"))
    trajectories = [Trajectory("0", [Turn("user", "go"), Turn("assistant", "Action: go")])]
    with pytest.raises(ConfigError, match="model.lora.enabled=false"):
        scratch_model(cfg, trajectories)
    cfg.model.lora.enabled = False
    cfg.model.scratch = ScratchConfig(hidden_size=16, num_layers=1, num_heads=2,
                                      intermediate_size=16)  # fmt: skip
    assert scratch_model(cfg, trajectories) == tmp_path / "scratch_model"
    assert (tmp_path / "scratch_model" / "tokenizer.json").is_file()
