"""What `ipr-bench` runs: the bench settings, the methods as config changes, and the cells.

A cell is one (seed, method) run in `<out>/<name>/seed_<s>/<method>/`. The `sft` cell of a
seed trains SFT once (and evaluates it); every other method starts from that cell's
checkpoint, so all methods of a seed share one SFT policy, and runs `iterations` iterations
with the same epochs, learning rate and evaluation. Pure functions; `run.py` runs them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ipr_lightning.config import (
    ConfigError,
    RunConfig,
    data_source,
    load_config,
    normalise_overrides,
    read_yaml,
)

SFT = "sft"
METHODS: dict[str, dict[str, object]] = {
    # ETO (Song et al. 2024): DPO on whole-trajectory (outcome) pairs only, against the
    # policy at the start of each iteration; no step exploration, no MC scoring, no NLL term.
    "eto": {"ipr.pair_types": ["outcome"], "ipr.reference": "previous", "loss.w_sft": 0.0},
    # IPR: outcome + step pairs with MC step values, SFT + outcome-DPO + step-DPO.
    "ipr": {},
    # The paper's ablations (its Table 4): each drops one part of IPR.
    "ipr_no_step": {"ipr.pair_types": ["outcome"]},
    "ipr_no_outcome": {"ipr.pair_types": ["step"]},
    "ipr_no_sft": {"loss.w_sft": 0.0},
}
LABELS = {
    SFT: "SFT",
    "eto": "ETO",
    "ipr": "IPR",
    "ipr_no_step": "IPR - step-DPO",
    "ipr_no_outcome": "IPR - outcome-DPO",
    "ipr_no_sft": "IPR - SFT term",
}


@dataclass
class BenchConfig:
    """The `bench:` section of a bench config (every other key is a run config)."""

    name: str = "bench"
    """The bench's folder under `out_dir`."""
    out_dir: str = "bench"
    """Where benches are written: `<out_dir>/<name>/`."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """One SFT run per seed; every method of a seed starts from it."""
    methods: list[str] = field(default_factory=lambda: ["eto", "ipr"])
    """Methods after SFT: eto, ipr, ipr_no_step, ipr_no_outcome, ipr_no_sft."""
    iterations: int = 2
    """Iterations of every method (same epochs, LR and evaluation for all)."""
    splits: list[str] = field(default_factory=lambda: ["valid_unseen", "valid_seen"])
    """Held-out splits evaluated after SFT and every iteration; the first one picks the
    best iteration in the plots."""

    sft_from: str = ""
    """Another bench's folder (`<out_dir>/<name>`) whose finished SFT cells this bench starts
    from instead of training its own: for trying the methods' settings (`ipr.*`, `loss.*`)
    on the same SFT policies. Every other setting must be the one those cells ran with; they
    are read, never written."""

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ConfigError(f"bench.methods: unknown {unknown}; choose from {list(METHODS)}")
        if len(set(self.methods)) != len(self.methods) or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("bench.methods and bench.seeds must not repeat")
        if not self.seeds or not self.splits:
            raise ConfigError("bench.seeds and bench.splits must not be empty")
        if self.iterations < 1:
            raise ConfigError(f"bench.iterations must be >= 1, got {self.iterations}")

    @property
    def root(self) -> Path:
        return Path(self.out_dir) / self.name

    def cell_dir(self, seed: int, method: str) -> Path:
        if method == SFT and self.sft_from:
            return Path(self.sft_from) / f"seed_{seed}" / SFT
        return self.root / f"seed_{seed}" / method


def load_bench(
    path: str | Path, overrides: list[str] | None = None
) -> tuple[BenchConfig, DictConfig]:
    """The bench settings and the run config's mapping (checked) from one YAML file;
    overrides `bench.x=...` go to the bench, every other one to the run config."""
    raw = copy.deepcopy(read_yaml(path))
    section = raw.pop("bench", None) or {}
    overrides = normalise_overrides(overrides or [])  # `--k=v` as `k=v`; `k` alone refused
    mine = [o.removeprefix("bench.") for o in overrides if o.startswith("bench.")]
    rest = [o for o in overrides if not o.startswith("bench.")]
    try:
        merged = OmegaConf.merge(OmegaConf.structured(BenchConfig), section)
        if mine:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(mine))
        bench = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"{path}: bad key 'bench.{key}': {str(exc).splitlines()[0]}") from None
    assert isinstance(bench, BenchConfig)
    if rest:
        raw = OmegaConf.merge(raw, OmegaConf.from_dotlist(rest))
    cell_config(bench, raw, path, bench.seeds[0], "ipr")  # a bad run config fails now
    return bench, raw


def cell_config(
    bench: BenchConfig,
    raw: DictConfig,
    path: str | Path,
    seed: int,
    method: str,
    sft: RunConfig | None = None,
) -> RunConfig:
    """The run config of one cell. Method cells take the model and the expert data the SFT
    cell resolved (`sft`: its saved config), so they start from exactly what SFT trained."""
    changes = {
        "output_dir": str(bench.cell_dir(seed, method)),
        "seed": seed,
        "ipr.iterations": 0 if method == SFT else bench.iterations,
        "ipr.eval_every_phase": True,
        "eval.split": bench.splits[0],
        "eval.extra_splits": list(bench.splits[1:]),
        **({} if method == SFT else METHODS[method]),
    }
    if sft is not None:
        changes["model.name_or_path"] = sft.model.name_or_path
        changes["data.train_file"] = data_source(sft)
    dotlist = [f"{k}={_yaml_value(v)}" for k, v in changes.items()]
    return load_config(path, dotlist, loaded=raw)


def _yaml_value(value: object) -> str:
    if isinstance(value, list):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def cells(bench: BenchConfig) -> list[tuple[int, str]]:
    """Every (seed, method) in run order: a seed's SFT first, then its methods."""
    return [(s, m) for s in bench.seeds for m in (SFT, *bench.methods)]
