"""The bench's PNG plots (matplotlib, the `bench` extra): success per iteration per method
with error bars, pairs per iteration by type, expert vs agent step-value histograms."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from ipr_lightning.bench.plan import LABELS, BenchConfig
from ipr_lightning.bench.report import Cell, mean_std, series


def _pyplot():  # noqa: ANN202 - matplotlib is optional
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_success(rows: Sequence[dict], bench: BenchConfig, path: Path) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(bench.splits), figsize=(5.5 * len(bench.splits), 4))
    axes = [axes] if len(bench.splits) == 1 else list(axes)
    for ax, split in zip(axes, bench.splits, strict=True):
        for i, method in enumerate(bench.methods):
            by_it = series(rows, method, split, "success_rate")
            if not by_it:
                continue
            its = list(by_it)
            stats = [mean_std([100 * x for x in by_it[k]]) for k in its]
            shift = (i - (len(bench.methods) - 1) / 2) * 0.04  # keep error bars apart
            ax.errorbar(
                [k + shift for k in its],
                [m for m, _ in stats],
                yerr=[s for _, s in stats],
                marker="o",
                capsize=3,
                label=LABELS[method],
            )
        ax.set_title(f"{split} (mean ± std over {len(bench.seeds)} seeds)")
        ax.set_xlabel("iteration (0 = SFT)")
        ax.set_ylabel("success rate (%)")
        ax.set_xticks(range(bench.iterations + 1))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_pairs(cells: Sequence[Cell], bench: BenchConfig, path: Path) -> Path:
    """Stacked bars: per method and iteration, mean pairs over seeds by type and winner."""
    plt = _pyplot()
    kinds = ("outcome_expert", "outcome_agent", "step_expert", "step_agent")
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(bench.methods) * bench.iterations, 4))
    labels, bottoms = [], []
    bars: dict[str, list[float]] = {kind: [] for kind in kinds}
    for method in bench.methods:
        for k in range(1, bench.iterations + 1):
            mine = [c.phases[k].get("explore", {}) for c in cells if c.method == method
                    and k in c.phases]  # fmt: skip
            labels.append(f"{LABELS[method]}\nit {k}")
            for kind in kinds:
                xs = [e.get(f"pairs/{kind}", 0) for e in mine]
                bars[kind].append(statistics.fmean(xs) if xs else 0.0)
    bottoms = [0.0] * len(labels)
    for kind in kinds:
        ax.bar(range(len(labels)), bars[kind], bottom=bottoms, label=kind.replace("_", " pairs, ")
               + " wins")  # fmt: skip
        bottoms = [b + x for b, x in zip(bottoms, bars[kind], strict=True)]
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel(f"pairs (mean over {len(bench.seeds)} seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_values(cells: Sequence[Cell], path: Path) -> Path | None:
    """Histograms of the MC step values of the expert's and the agent's action at j+1 (IPR's
    cells; the first method with step values when IPR is not run)."""
    method = next((m for m in ("ipr", *(c.method for c in cells)) if any(
        c.method == m and c.values for c in cells)), None)  # fmt: skip
    values = [v for c in cells if c.method == method for vs in c.values.values() for v in vs]
    if not values:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    bins = [i / 10 for i in range(11)]
    expert = [v["expert_value"] for v in values if v["expert_value"] is not None]
    agent = [v["agent_value"] for v in values if v["agent_value"] is not None]
    ax.hist(expert, bins=bins, alpha=0.6, label=f"expert action (n={len(expert)})")
    ax.hist(agent, bins=bins, alpha=0.6, label=f"agent action (n={len(agent)})")
    ax.set_xlabel("MC step value (mean final reward of the SFT scorer's rollouts)")
    ax.set_ylabel(f"explored steps ({LABELS[method]}, all seeds and iterations)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
