"""The bench report: read every cell's results, aggregate over seeds, write tables.

Pure functions over what the runs wrote (`phases.jsonl`, `eval/*/summary.json`,
`iter_<k>/stats.json`, `iter_<k>/step_values.jsonl`): the report can be rebuilt at any time
from the folders alone. `results.csv` has one row per (method, seed, iteration, split);
`results.md` the tables (mean ± sample std over seeds; best and last iteration labelled).
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ipr_lightning.bench.plan import LABELS, SFT, BenchConfig

CSV_FIELDS = (
    "method",
    "seed",
    "iteration",
    "split",
    "success_rate",
    "avg_reward",
    "invalid_rate",
    "malformed_rate",
    "avg_turns",
    "episodes",
    "pairs_outcome",
    "pairs_step",
    "pairs_trained",
    "explore_episodes",
    "mc_episodes",
    "expert_mc_total",
    "generated_tokens",
    "scorer_episodes",
    "scorer_tokens",
    "scorer_seconds",
    "values_predicted",
    "values_heldout_mse",
    "values_heldout_mse_constant",
    "values_heldout_agreement",
    "explore_seconds",
    "train_seconds",
    "eval_seconds",
)


@dataclass
class Cell:
    """One finished (or partly finished) cell: its phase rows and step values by iteration."""

    seed: int
    method: str
    phases: dict[int, dict] = field(default_factory=dict)
    values: dict[int, list[dict]] = field(default_factory=dict)


def _iteration(phase: str) -> int:
    return 0 if phase == "sft" else int(phase.removeprefix("iteration "))


def read_cell(folder: Path, seed: int, method: str) -> Cell:
    cell = Cell(seed, method)
    path = folder / "phases.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            k = _iteration(row["phase"])
            stats = folder / f"iter_{k}" / "stats.json"
            if k and stats.is_file():
                row["explore"] = json.loads(stats.read_text())
            cell.phases[k] = row
            values = folder / f"iter_{k}" / "step_values.jsonl"
            lines = values.read_text().splitlines() if k and values.is_file() else []
            if lines:  # none: the method explores no step (ETO, IPR - step)
                cell.values[k] = [json.loads(v) for v in lines]
    return cell


def read_cells(bench: BenchConfig) -> list[Cell]:
    return [
        read_cell(bench.cell_dir(seed, method), seed, method)
        for seed in bench.seeds
        for method in (SFT, *bench.methods)
    ]


def csv_rows(cells: Sequence[Cell]) -> list[dict]:
    rows = []
    for cell in cells:
        for k, phase in sorted(cell.phases.items()):
            if cell.method != SFT and k == 0:
                continue  # the SFT cell's row, copied into every method
            e = phase.get("explore", {})
            for split, s in phase.get("eval", {}).items():
                rows.append(
                    {
                        "method": cell.method,
                        "seed": cell.seed,
                        "iteration": k,
                        "split": split,
                        "success_rate": s["success_rate"],
                        "avg_reward": s["avg_reward"],
                        "invalid_rate": s.get("invalid_rate"),
                        "malformed_rate": s.get("malformed_rate"),
                        "avg_turns": s.get("avg_turns"),
                        "episodes": s["episodes"],
                        "pairs_outcome": e.get("pairs/outcome"),
                        "pairs_step": e.get("pairs/step"),
                        "pairs_trained": e.get("pairs/trained"),
                        "explore_episodes": e.get("explore/episodes"),
                        "mc_episodes": e.get("explore/mc_episodes"),
                        "expert_mc_total": e.get("explore/expert_mc_episodes_total"),
                        "generated_tokens": e.get("explore/generated_tokens"),
                        "scorer_episodes": e.get("explore/scorer_episodes"),
                        "scorer_tokens": e.get("explore/scorer_tokens"),
                        "scorer_seconds": e.get("explore/scorer_seconds"),
                        "values_predicted": e.get("values/predicted"),
                        "values_heldout_mse": e.get("values/heldout_mse"),
                        "values_heldout_mse_constant": e.get("values/heldout_mse_constant"),
                        "values_heldout_agreement": e.get("values/heldout_decision_agreement"),
                        "explore_seconds": e.get("explore/wall_seconds"),
                        "train_seconds": phase.get("train_seconds"),
                        "eval_seconds": s.get("wall_seconds"),
                    }
                )
    return rows


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value, which `fmt` does not show)."""
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def fmt(xs: Sequence[float], scale: float = 100.0, digits: int = 1, n: int | None = None) -> str:
    """`mean ± std` (a single value alone); `(n=k)` appended when k values are not the `n`
    expected (the seeds)."""
    if not xs:
        return "-"
    m, s = mean_std([x * scale for x in xs])
    partial = f" (n={len(xs)})" if n is not None and len(xs) != n else ""
    spread = f" ± {s:.{digits}f}" if len(xs) > 1 else ""  # one value: no spread to show
    return f"{m:.{digits}f}{spread}{partial}"


def series(rows: Sequence[dict], method: str, split: str, key: str) -> dict[int, list[float]]:
    """Per iteration, the values of `key` over seeds; iteration 0 is SFT for every method."""
    out: dict[int, list[float]] = {}
    for r in rows:
        if r["split"] != split or r[key] is None:
            continue
        if r["method"] == method or (r["method"] == SFT and r["iteration"] == 0):
            out.setdefault(r["iteration"], []).append(float(r[key]))
    return dict(sorted(out.items()))


def best_and_last(by_it: dict[int, list[float]]) -> tuple[int, int]:
    """(best, last) iteration: best by mean over seeds (earliest on ties)."""
    best = max(by_it, key=lambda k: (statistics.fmean(by_it[k]), -k))
    return best, max(by_it)


def metric_table(
    rows: Sequence[dict],
    bench: BenchConfig,
    split: str,
    key: str,
    scale: float,
    ranked: bool = True,
) -> list[str]:
    """Per method, `key` per iteration (mean ± std over seeds); `ranked` adds the last and the
    best iteration (higher is better: success, reward)."""
    its = range(bench.iterations + 1)
    head = ["method", "SFT (it 0)", *(f"it {k}" for k in its if k)]
    head += ["last", "best (it)"] if ranked else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    n = len(bench.seeds)
    for method in (SFT, *bench.methods):
        by_it = series(rows, method, split, key)
        if not by_it or (method != SFT and max(by_it) == 0):
            continue  # not run yet (the header lists unfinished cells)
        if method == SFT:
            cells = [fmt(by_it[0], scale, n=n), *("" for k in its if k)]
        else:
            cells = [fmt(by_it.get(k, []), scale, n=n) for k in its]
        if not ranked:
            lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
            continue
        best, last = best_and_last(by_it)
        cells += [
            f"{fmt(by_it[last], scale, n=n)} (it {last})",
            f"{fmt(by_it[best], scale, n=n)} (it {best})",
        ]
        lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
    return lines


def group_table(cells: Sequence[Cell], bench: BenchConfig, split: str) -> list[str]:
    """Success per task group (ALFWorld: task type) at SFT and at each method's last
    iteration, mean over seeds."""
    per: dict[str, dict[str, list[float]]] = {}
    for cell in cells:
        k = 0 if cell.method == SFT else max((k for k in cell.phases if k), default=None)
        if k is None or k not in cell.phases:
            continue
        summary = cell.phases[k].get("eval", {}).get(split, {})
        for group, g in summary.get("by_group", {}).items():
            per.setdefault(cell.method, {}).setdefault(group, []).append(g["success_rate"])
    groups = sorted({g for m in per.values() for g in m})
    if not groups:
        return []
    lines = ["| method (last it) | " + " | ".join(groups) + " |", "|" + "---|" * (len(groups) + 1)]
    for method in (SFT, *bench.methods):
        if method in per:
            row = [fmt(per[method].get(g, []), 100, 0) for g in groups]
            lines.append(f"| {LABELS[method]} | " + " | ".join(row) + " |")
    return lines


def cost_table(rows: Sequence[dict], bench: BenchConfig) -> list[str]:
    """Per method and iteration, means over seeds (first split's rows: one per cell)."""
    keys = (
        ("pairs_outcome", "outcome pairs"),
        ("pairs_step", "step pairs"),
        ("pairs_trained", "trained"),
        ("explore_episodes", "explored"),
        ("mc_episodes", "MC rollouts"),
        ("expert_mc_total", "expert MC rollouts (run so far)"),
        ("scorer_episodes", "MC rollouts run (per pair)"),
        ("scorer_tokens", "MC tokens run (per pair)"),
        ("scorer_seconds", "MC s (per pair)"),
        ("values_predicted", "values predicted"),
        ("generated_tokens", "gen. tokens"),
        ("explore_seconds", "explore s"),
        ("train_seconds", "train s"),
        ("eval_seconds", "eval s"),
    )
    per_pair = {"scorer_episodes": ".1f", "scorer_tokens": ".0f", "scorer_seconds": ".2f"}
    head = ["method", "it", *(label for _, label in keys)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    split = bench.splits[0]
    for method in (SFT, *bench.methods):
        mine = [r for r in rows if r["method"] == method and r["split"] == split]
        for k in sorted({r["iteration"] for r in mine}):
            at = [r for r in mine if r["iteration"] == k]
            vals = []
            for key, _ in keys:
                xs = [float(r[key]) for r in at if r[key] is not None]
                vals.append(f"{statistics.fmean(xs):.0f}" if xs else "-")
                built = [
                    float(r[key]) / (r["pairs_outcome"] + r["pairs_step"])
                    for r in at
                    if r[key] is not None and (r["pairs_outcome"] or 0) + (r["pairs_step"] or 0)
                ]
                if key in per_pair and built:
                    vals[-1] += f" ({statistics.fmean(built):{per_pair[key]}})"
            lines.append(f"| {LABELS[method]} | {k} | " + " | ".join(vals) + " |")
    return lines


def value_model_table(rows: Sequence[dict], bench: BenchConfig) -> list[str]:
    """The value model's held-out error and its agreement with MC on pair decisions, per
    method and iteration (means over seeds); empty when no iteration used one."""
    split = bench.splits[0]
    mine = [r for r in rows if r["split"] == split and r["values_heldout_mse"] is not None]
    if not mine:
        return []
    lines = [
        "| method | it | held-out MSE | constant predictor's MSE | decisions as MC's |",
        "|---|---|---|---|---|",
    ]
    for method in bench.methods:
        for k in sorted({r["iteration"] for r in mine if r["method"] == method}):
            at = [r for r in mine if r["method"] == method and r["iteration"] == k]
            cells = []
            for key, digits in (
                ("values_heldout_mse", 4),
                ("values_heldout_mse_constant", 4),
                ("values_heldout_agreement", 1),
            ):
                xs = [float(r[key]) for r in at if r[key] is not None]
                scale = 100.0 if key == "values_heldout_agreement" else 1.0
                cells.append(fmt(xs, scale, digits, len(bench.seeds)))
            lines.append(f"| {LABELS[method]} | {k} | " + " | ".join(cells) + " |")
    return lines


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    if len(xs) < 3:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sx = math.sqrt(sum((x - mx) ** 2 for x in xs))
    sy = math.sqrt(sum((y - my) ** 2 for y in ys))
    if sx == 0 or sy == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / (sx * sy)


def diagnostics(cells: Sequence[Cell]) -> list[dict]:
    """Per method with step pairs and iteration, over seeds: how often the expert's action
    has the higher MC value (by j), the expert's share of step pairs, and how well an
    agent action's MC value predicts its episode's final reward (MC values only)."""
    out = []
    for method in sorted({c.method for c in cells if c.values}):
        for k in sorted({k for c in cells if c.method == method for k in c.values}):
            values = [v for c in cells if c.method == method for v in c.values.get(k, [])]
            # adaptive MC values only what can form a pair, expert actions included; values a
            # value model predicted (`ipr.step_values`) are not MC's
            valued = [
                v
                for v in values
                if None not in (v["agent_value"], v["expert_value"]) and not v.get("predicted")
            ]
            by_j: dict[int, list[bool]] = {}
            for v in valued:
                by_j.setdefault(v["j"], []).append(v["expert_value"] > v["agent_value"])
            winners = [
                (
                    c.phases.get(k, {}).get("explore", {}).get("pairs/step_expert", 0),
                    c.phases.get(k, {}).get("explore", {}).get("pairs/step_agent", 0),
                )
                for c in cells
                if c.method == method
            ]
            expert_wins, agent_wins = (sum(w[0] for w in winners), sum(w[1] for w in winners))
            experts = [v["expert_value"] for v in values if v["expert_value"] is not None]
            out.append(
                {
                    "method": method,
                    "iteration": k,
                    "explored_steps": len(values),
                    "valued_steps": len(valued),
                    "expert_higher": sum(map(sum, by_j.values())) / max(1, len(valued)),
                    "expert_higher_by_j": {j: sum(w) / len(w) for j, w in sorted(by_j.items())},
                    "step_pairs": expert_wins + agent_wins,
                    "expert_share_of_step_pairs": (
                        expert_wins / (expert_wins + agent_wins)
                        if expert_wins + agent_wins
                        else None
                    ),
                    "corr_value_final_reward": pearson(
                        [v["agent_value"] for v in valued], [v["agent_reward"] for v in valued]
                    ),
                    "mean_expert_value": statistics.fmean(experts) if experts else None,
                    "mean_agent_value": statistics.fmean(v["agent_value"] for v in valued)
                    if valued
                    else None,
                }
            )
    return out


def diagnostics_table(diag: Sequence[dict]) -> list[str]:
    def num(x: float | None, f: str = ".2f") -> str:
        return "-" if x is None else format(x, f)

    head = [
        "method", "it", "explored steps", "MC-valued", "expert value > agent's",
        "by j (1, 2, 3, ...)", "step pairs", "expert wins", "corr(value, final reward)",
        "mean value expert / agent",
    ]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d in diag:
        by_j = ", ".join(f"{v:.2f}" for v in list(d["expert_higher_by_j"].values())[:8])
        lines.append(
            f"| {LABELS[d['method']]} | {d['iteration']} | {d['explored_steps']} | "
            f"{d['valued_steps']} | {num(d['expert_higher'])} | {by_j or '-'} | "
            f"{d['step_pairs']} | {num(d['expert_share_of_step_pairs'])} | "
            f"{num(d['corr_value_final_reward'])} | "
            f"{num(d['mean_expert_value'])} / {num(d['mean_agent_value'])} |"
        )
    return lines


def write_report(
    bench: BenchConfig, cells: Sequence[Cell], rows: Sequence[dict], header: Sequence[str] = ()
) -> tuple[Path, str]:
    """Write results.csv, results.md (and diagnostics.json) under the bench root from the
    cells read (`read_cells`) and their rows (`csv_rows`); returns the markdown path and text."""
    root = bench.root
    root.mkdir(parents=True, exist_ok=True)
    with (root / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    diag = diagnostics(cells)
    (root / "diagnostics.json").write_text(json.dumps(diag, indent=1) + "\n")
    seeds = ", ".join(map(str, bench.seeds))
    md = [f"# ipr-bench: {bench.name}", "", *header]
    md += [
        f"Seeds {seeds}; {bench.iterations} iterations per method; mean ± sample std over "
        "the seeds (`(n=k)`: only k seeds have that result yet). **last** = the final "
        "iteration (what a run delivers); **best** = the iteration with the highest mean on "
        "that same split (an optimistic pick, shown for comparison with papers that report it).",
        "",
    ]
    for split in bench.splits:
        md += [f"## Success rate (%) on {split}", "", *metric_table(rows, bench, split,
               "success_rate", 100.0), ""]  # fmt: skip
        md += [f"## Average reward (x100) on {split}", "", *metric_table(rows, bench, split,
               "avg_reward", 100.0), ""]  # fmt: skip
        md += [
            f"## Agent behaviour on {split}",
            "",
            "Invalid: actions the environment rejected (ALFWorld: `Nothing happens.`); "
            "malformed: outputs with no parsable action; both as shares of the agent's "
            "actions. Invalid actions rising after DPO while success stays flat is the policy "
            "drifting from what SFT taught it.",
            "",
        ]
        for title, key, scale in (
            ("Invalid actions (%)", "invalid_rate", 100.0),
            ("Malformed outputs (%)", "malformed_rate", 100.0),
            ("Turns per episode", "avg_turns", 1.0),
        ):
            table = metric_table(rows, bench, split, key, scale, ranked=False)
            md += [f"**{title}**", "", *table, ""]
        groups = group_table(cells, bench, split)
        if groups:
            md += [f"## Success (%) by task type on {split}, last iteration", "", *groups, ""]
    md += [
        "## Pairs, rollouts and wall time per iteration (mean over seeds)",
        "",
        "Iteration 1 explores with the SFT policy for every method: its rollouts run once "
        "per seed and are shared, so its exploration time is paid by the first method that "
        "needs them. MC rollouts: the agent's actions' of that iteration; the expert's "
        "actions' values are shared by all iterations, so their column counts all run so far. "
        "MC rollouts / tokens / s run: the scorer rollouts (the expert's and the agent's) "
        "that the iteration itself ran -- not those it found in its store -- and in brackets "
        "per pair built. Values predicted: step values a value model gave instead of MC "
        "(`ipr.step_values` model/mixed).",
        "",
        *cost_table(rows, bench),
        "",
    ]
    values = value_model_table(rows, bench)
    if values:
        md += [
            "## Value model (`ipr.step_values` model/mixed)",
            "",
            "On the held-out tasks' MC-labelled actions (1 task in 5, never trained on): mean "
            "squared error against the MC values, that of always predicting the training "
            "labels' mean, and the share (%) of the comparisons whose rewards allow a step "
            "pair where the model's values give MC's decision.",
            "",
            *values,
            "",
        ]
    if diag:
        md += [
            "## Step-value diagnostics (all seeds pooled)",
            "",
            "Per explored step j >= 1: how often the MC value of the expert's action at j+1 "
            "exceeds the agent's; the expert's share of the step pairs; the correlation "
            "between an agent action's MC value and its episode's final reward.",
            "",
            *diagnostics_table(diag),
            "",
        ]
    text = "\n".join(md)
    (root / "results.md").write_text(text)
    return root / "results.md", text
