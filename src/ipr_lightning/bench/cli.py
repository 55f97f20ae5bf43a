"""`ipr-bench`: run every (seed, method) cell of a bench config, then write the report.

    ipr-bench --config configs/bench_alfworld_cpu.yaml            # run (or resume), report
    ipr-bench --config configs/bench_alfworld_cpu.yaml bench.seeds=[0]   # overrides
    ipr-bench --config configs/bench_alfworld_cpu.yaml --report   # only rebuild the report

Finished cells are never rerun: a second invocation of a finished bench only prints the
report. Writes `<bench.out_dir>/<bench.name>/results.md`, `results.csv`, `diagnostics.json`
and the plots (`success.png`, `pairs.png`, `step_values.png`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence

from ipr_lightning import stopping
from ipr_lightning.bench.plan import BenchConfig, cells, load_bench
from ipr_lightning.bench.report import csv_rows, read_cells, write_report
from ipr_lightning.bench.run import CELL_DONE, check_cells, is_done, run_bench
from ipr_lightning.cli import USER_ERRORS, stopped_message
from ipr_lightning.stopping import StopRequested

log = logging.getLogger("ipr_lightning")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="ipr-bench",
        allow_abbrev=False,
        description="SFT vs ETO vs IPR (and ablations) over seeds, with a report. Extra "
        "arguments are overrides: bench.key=value for the bench, key=value for the runs.",
    )
    parser.add_argument("--config", required=True, help="bench YAML (run config + bench:)")
    parser.add_argument(
        "--report", action="store_true", help="only rebuild the report from the cells on disk"
    )
    return parser.parse_known_args(argv)


def report(bench: BenchConfig, config: str, overrides: Sequence[str] = ()) -> str:
    records = [
        json.loads((bench.cell_dir(*c) / CELL_DONE).read_text())
        for c in cells(bench)
        if is_done(bench.cell_dir(*c))
    ]
    unfinished = [f"seed {s} {m}" for s, m in cells(bench) if not is_done(bench.cell_dir(s, m))]
    machines = sorted({r.get("machine", "?") for r in records})
    command = " ".join(["ipr-bench --config", config, *overrides])
    header = [
        f"Command: `{command}`. Machine{'s' * (len(machines) > 1)}: "
        f"{'; '.join(machines) or '-'}. {len(records)}/{len(cells(bench))} cells finished in "
        f"{sum(r['seconds_last_launch'] for r in records) / 60:.1f} min (their last launches)"
        + (f"; not finished: {', '.join(unfinished)}." if unfinished else "."),
        "",
    ]
    if bench.sft_from:
        header[0] += f" The SFT cells (counted above) are `{bench.sft_from}`'s."
    all_cells = read_cells(bench)
    rows = csv_rows(all_cells)
    path, text = write_report(bench, all_cells, rows, header)
    try:
        from ipr_lightning.bench.plots import plot_pairs, plot_success, plot_values
    except ImportError:
        log.warning("matplotlib is not installed (pip install '.[bench]'): no plots")
        return text
    plot_success(rows, bench, bench.root / "success.png")
    plot_pairs(all_cells, bench, bench.root / "pairs.png")
    plot_values(all_cells, bench.root / "step_values.png")
    print(f"ipr-bench: report in {path} (+ results.csv, diagnostics.json, *.png)")
    return text


def main(argv: list[str] | None = None) -> int:
    args, rest = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        bench, raw = load_bench(args.config, rest)
        check_cells(bench, raw, args.config)  # results of other settings are never mixed in
        todo = [c for c in cells(bench) if not is_done(bench.cell_dir(*c))]
        if todo and not args.report:
            start = time.perf_counter()
            run_bench(bench, raw, args.config)
            print(f"ipr-bench: ran {len(todo)} cells in {time.perf_counter() - start:.0f} s")
        elif not todo:
            print(f"ipr-bench: all {len(cells(bench))} cells of {bench.root} are finished")
        text = report(bench, args.config, rest)
    except USER_ERRORS as exc:
        print(f"ipr-bench: error: {exc}", file=sys.stderr)
        return 2
    except StopRequested:
        print(stopped_message("ipr-bench", ""), file=sys.stderr)
        return stopping.EXIT_CODE
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
