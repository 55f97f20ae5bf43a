"""`ipr-data`: build and inspect task data (ALFWorld, InterCode-SQL, WebShop-style).

    ipr-data alfworld generate [--out DIR] [--train 2000 --seen 140 --unseen 134 --seed 0
                                --workers 2]          # offline games in the official layout
    ipr-data alfworld trajectories --data DIR --split train --out FILE.json [--workers 2]
    ipr-data alfworld stats --data DIR [--tokenizer embedded:smollm2-135m-instruct]
    ipr-data sql server start --dir DIR [--port 3307] [--timeout 5]  # a private MariaDB
    ipr-data sql server stop --dir DIR                 # (also: info)
    ipr-data sql stats [--tasks FILE] [--test-size 200]  # questions per split and hardness
    ipr-data webshop stats [--split test] [--limit N] [--products 5000 --seed 0]
                                # expert / oracle / random rewards on the WebShop-style goals
    ipr-data webshop trajectories --split train --out FILE.json  # expert demonstrations
    ipr-data pairs reference --config C --out FILE [key=value ...]
                                # data.pairs_file with the DPO reference's log-probs set
    ipr-data check-env NAME [--config C] [--split S] [--file F] [key=value ...]
                                # replay expert trajectories in the env; one line per mismatch

Without --data, `$ALFWORLD_DATA` (the official data) is used when set, else the generated
games (generated on first use; their results are NOT on the official split). User mistakes
(missing folders, bad numbers) end with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from pathlib import Path
from typing import Any, NoReturn

from ipr_lightning.config import ConfigError
from ipr_lightning.data.io import DataFileError
from ipr_lightning.envs.alfworld.engine import SPLITS
from ipr_lightning.envs.alfworld.games import (  # noqa: F401  (re-exported for callers)
    default_games_dir,
    generate_games,
    resolve_alfworld_data,
)

log = logging.getLogger("ipr_lightning")


class UserError(Exception):
    """A mistake in the command line or the data it points at (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message}\n")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive(text: str) -> int:
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ipr-data", description="Build and inspect task data.")
    tasks = parser.add_subparsers(dest="task", required=True, parser_class=_Parser)
    alf = tasks.add_parser("alfworld", help="ALFWorld games, expert trajectories, statistics")
    cmds = alf.add_subparsers(dest="command", required=True, parser_class=_Parser)
    gen = cmds.add_parser("generate", help="write offline games in the official layout")
    gen.add_argument("--out", help="output folder (default: a cache folder per parameter set)")
    gen.add_argument("--train", type=_count, default=2000)
    gen.add_argument("--seen", type=_count, default=140, help="valid_seen games")
    gen.add_argument("--unseen", type=_count, default=134, help="valid_unseen games")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument(
        "--max-steps",
        type=_positive,
        default=20,
        help="keep games the expert wins within this many steps (IPR: 20)",
    )
    traj = cmds.add_parser("trajectories", help="expert trajectories with rationales (JSON)")
    traj.add_argument("--split", choices=SPLITS, default="train")
    traj.add_argument("--out", required=True, help="output .json (ShareGPT shape)")
    traj.add_argument("--limit", type=_positive, help="only the first N games")
    traj.add_argument(
        "--style",
        choices=("put", "move"),
        default="put",
        help="action vintage written: put X in/on Y (paper) or move X to Y",
    )
    stats = cmds.add_parser("stats", help="games per task type, expert steps and tokens")
    stats.add_argument(
        "--tokenizer",
        default="embedded:smollm2-135m-instruct",
        help="model whose tokenizer counts tokens, or 'none'",
    )
    stats.add_argument("--limit", type=_positive, help="only the first N games per split")
    for sub in (gen, traj, stats):
        sub.add_argument("--workers", type=_positive, default=2, help="processes")
        sub.add_argument("--no-progress", action="store_true", help="no progress bars")
    for sub in (traj, stats):
        sub.add_argument(
            "--data",
            help="data root holding json_2.1.1/ (default: "
            "$ALFWORLD_DATA, else the generated games)",
        )
    add_sql_parser(tasks)
    add_webshop_parser(tasks)
    return parser


def add_sql_parser(tasks: Any) -> None:
    sql = tasks.add_parser("sql", help="InterCode-SQL: a private MariaDB server, task stats")
    cmds = sql.add_subparsers(dest="command", required=True, parser_class=_Parser)
    server = cmds.add_parser("server", help="start/stop/show a local MariaDB with the databases")
    server.add_argument("action", choices=("start", "stop", "info"))
    server.add_argument("--dir", required=True, help="data folder of the server")
    server.add_argument("--dump", help="MySQL dump to load (default: intercode-bench's)")
    server.add_argument("--port", type=_count, default=3307, help="0: any free port")
    server.add_argument("--timeout", type=float, default=5.0, help="statement limit, seconds")
    stats = cmds.add_parser("stats", help="questions per split and hardness")
    stats.add_argument("--tasks", default="embedded:intercode", help="InterCode task file")
    stats.add_argument("--test-size", type=_positive, default=200)
    stats.add_argument("--seed", type=int, default=0)


def add_webshop_parser(tasks: Any) -> None:
    pairs = tasks.add_parser("pairs", help="preference pairs files")
    cmds = pairs.add_subparsers(dest="command", required=True, parser_class=_Parser)
    ref = cmds.add_parser(
        "reference",
        help="compute the reference log-probs of data.pairs_file (the model of --config, "
        "its model.init_adapter or the base model) and write the pairs with them",
    )
    ref.add_argument("--config", help="a run config (YAML); overrides follow")
    ref.add_argument("--out", required=True, help="output pairs JSON")
    ref.add_argument("overrides", nargs="*", help="config overrides, e.g. data.pairs_file=P")
    check = tasks.add_parser(
        "check-env",
        help="replay an env's expert trajectories step by step against the env (exit 1 on a "
        "mismatch)",
    )
    check.add_argument("name", help="env.name: a registered env, plug-in or package.module:builder")
    check.add_argument("overrides", nargs="*", help="config overrides, e.g. env.options.n_train=8")
    check.add_argument("--config", help="a run config (YAML) whose env section to use")
    check.add_argument("--split", help="split to check (default: env.train_split)")
    check.add_argument("--file", help="trajectory file to check (default: the env's expert)")
    check.add_argument("--limit", type=_count, default=0, help="first N records (0: all)")
    check.add_argument("--no-progress", action="store_true")
    shop = tasks.add_parser("webshop", help="WebShop-style shop: shopper rewards, expert data")
    cmds = shop.add_subparsers(dest="command", required=True, parser_class=_Parser)
    stats = cmds.add_parser("stats", help="catalogue size; expert/oracle/random reward spread")
    traj = cmds.add_parser("trajectories", help="the scripted expert's trajectories (JSON)")
    traj.add_argument("--out", required=True, help="output JSON file (ShareGPT shape)")
    for sub in (stats, traj):
        sub.add_argument("--split", choices=("train", "test"), default="test")
        sub.add_argument("--limit", type=_count, default=0, help="first N goals (0: all)")
        sub.add_argument("--products", type=_positive, default=5000)
        sub.add_argument("--train", type=_count, default=1624, help="train goals")
        sub.add_argument("--test", type=_count, default=200, help="test goals")
        sub.add_argument("--seed", type=int, default=0)
        sub.add_argument("--server", help="a WebShop server URL instead of the embedded shop")


def _data_root(args: argparse.Namespace) -> Path:
    if args.data is None:
        return resolve_alfworld_data(workers=args.workers, progress=not args.no_progress)
    root = Path(args.data)
    if not (root / "json_2.1.1").is_dir() and not any((root / s).is_dir() for s in SPLITS):
        raise UserError(f"--data {root}: no json_2.1.1/ folder (nor train/valid_* folders)")
    return root


def cmd_generate(args: argparse.Namespace) -> None:
    result = generate_games(
        args.out,
        args.train,
        args.seen,
        args.unseen,
        args.seed,
        args.workers,
        not args.no_progress,
        args.max_steps,
    )
    how = "cached" if result["cached"] else f"generated in {result['seconds']} s"
    if result.get("resumed"):
        how += f", {result['resumed']} games kept from an interrupted run"
    print(
        f"ALFWorld games in {result['out_dir']} ({how}); rejected candidates: {result['rejects']}"
    )
    print(_table({split: result["counts"][split] for split in SPLITS}))
    print("NOTE: generated games; results on them are NOT on the official ALFWorld split.")


def cmd_trajectories(args: argparse.Namespace) -> None:
    from ipr_lightning.data.io import write_trajectories
    from ipr_lightning.envs.alfworld.games import expert_trajectories

    root = _data_root(args)
    trajs = expert_trajectories(
        root, args.split, args.limit, not args.no_progress, args.style, args.workers
    )
    write_trajectories(args.out, trajs)
    print(f"wrote {len(trajs)} {args.split} expert trajectories to {args.out}")


def _table(counts: dict[str, dict[str, int]]) -> str:
    from ipr_lightning.envs.alfworld.engine import TASK_TYPES

    splits = list(counts)
    lines = [f"{'task type':34}" + "".join(f"{s:>14}" for s in splits)]
    for t in TASK_TYPES:
        lines.append(f"{t:34}" + "".join(f"{counts[s].get(t, 0):>14}" for s in splits))
    lines.append(f"{'total':34}" + "".join(f"{sum(counts[s].values()):>14}" for s in splits))
    return "\n".join(lines)


def _summary(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.mean(values):.1f} / {min(values)} / {max(values)}"


def cmd_stats(args: argparse.Namespace) -> None:
    from ipr_lightning.envs.alfworld.engine import TASK_TYPES, list_games, split_dir, task_type_of
    from ipr_lightning.envs.alfworld.games import expert_trajectories

    root = _data_root(args)
    counts = {}
    for split in SPLITS:
        try:
            games = list_games(root, split_dir(root, split))
        except FileNotFoundError:  # a data root without this split
            continue
        counts[split] = {t: 0 for t in map(task_type_of, games)}
        for game in games:
            counts[split][task_type_of(game)] += 1
    present = list(counts)
    print(f"ALFWorld games in {root}")
    print(_table(counts))
    tokenizer = _tokenizer(args.tokenizer)
    rows = []
    for split in present:
        trajs = expert_trajectories(
            root, split, args.limit, not args.no_progress, "put", args.workers
        )
        steps = [sum(t.role == "assistant" for t in tr.turns) - 1 for tr in trajs]
        tokens = [_tokens(tokenizer, tr.turns) if tokenizer else 0 for tr in trajs]
        types = [tr.meta["task_type"] for tr in trajs]
        rows.append((f"{split} ({len(trajs)})", steps, tokens))
        for t in TASK_TYPES:
            pick = [i for i, ty in enumerate(types) if ty == t]
            if pick:
                rows.append((f"  {t}", [steps[i] for i in pick], [tokens[i] for i in pick]))
    print(
        f"\n{'expert trajectories':36}{'steps mean / min / max':>24}{'tokens mean / min / max':>28}"
    )
    for name, steps, tokens in rows:
        print(f"{name:36}{_summary(steps):>24}{_summary(tokens) if tokenizer else '-':>28}")
    if tokenizer is not None:
        print(f"(tokens: whole conversation incl. instruction, {args.tokenizer} chat template)")


def _tokenizer(name: str) -> Any:
    if name == "none":
        return None
    from ipr_lightning.config import ModelConfig
    from ipr_lightning.data.render import ensure_chat_template
    from ipr_lightning.models import load_tokenizer

    return ensure_chat_template(load_tokenizer(ModelConfig(name_or_path=name)))


def _tokens(tokenizer: Any, turns: list) -> int:
    from ipr_lightning.data.render import render_conversation

    return len(render_conversation(tokenizer, turns, max_length=10**9).input_ids)


def cmd_sql_server(args: argparse.Namespace) -> None:
    from ipr_lightning.envs.intercode_sql.dump import default_dump_path
    from ipr_lightning.envs.intercode_sql.server import server_info, start_server, stop_server

    datadir = Path(args.dir).expanduser()
    if args.action == "stop":
        print("stopped" if stop_server(datadir) else f"no server running in {datadir}")
        return
    if args.action == "start":
        dump = Path(args.dump) if args.dump else default_dump_path()
        try:
            start_server(datadir, dump, args.port, statement_timeout=args.timeout)
        except RuntimeError as exc:
            raise UserError(str(exc)) from None
    info = server_info(datadir)
    if info is None:
        raise UserError(f"no server running in {datadir}")
    print(
        f"MariaDB on {info.host}:{info.port}, read-only user {info.user}, "
        f"{len(info.databases)} databases\n"
        f"use it: env.options.backend=mysql env.options.server_dir={datadir}"
    )


def cmd_sql_stats(args: argparse.Namespace) -> None:
    from ipr_lightning.envs.intercode_sql import SqlOptions
    from ipr_lightning.envs.intercode_sql.handle import sql_tasks
    from ipr_lightning.envs.intercode_sql.tasks import split_tasks

    try:
        tasks = sql_tasks(SqlOptions(task_file=args.tasks))
    except ValueError as exc:  # ConfigError / DataFileError: they name the file
        raise UserError(f"--tasks: {exc}") from None
    try:
        splits = split_tasks(tasks, args.test_size, args.seed)
    except ValueError as exc:
        raise UserError(f"--test-size: {exc}") from None
    levels = sorted({t.hardness for t in splits["all"]})
    print(f"{'split':8}{'tasks':>7}{'databases':>11}" + "".join(f"{h:>10}" for h in levels))
    for name, tasks in splits.items():
        counts = "".join(f"{sum(t.hardness == h for t in tasks):>10}" for h in levels)
        print(f"{name:8}{len(tasks):>7}{len({t.db for t in tasks}):>11}{counts}")


def _webshop(args: argparse.Namespace):
    from ipr_lightning.config import EnvConfig
    from ipr_lightning.envs import build_env
    from ipr_lightning.envs.webshop import WebShopOptions

    ws = WebShopOptions(args.server, args.products, args.train, args.test, seed=args.seed)
    handle = build_env(EnvConfig(name="webshop", max_turns=10, options=ws), args.split)
    return handle, handle.task_ids[: args.limit or None]


def cmd_webshop_stats(args: argparse.Namespace) -> None:
    from ipr_lightning.envs.webshop.agents import shopper_stats

    handle, ids = _webshop(args)
    if not args.server:
        shop = handle.make_env().shop
        types = len({p.query for p in shop.products})
        print(f"catalogue: {len(shop.products)} products, {types} product types")
    print(f"{args.split}: {len(ids)} goals")
    print(shopper_stats(handle.make_env, ids, oracle=not args.server))


def cmd_webshop_trajectories(args: argparse.Namespace) -> None:
    from ipr_lightning.data.io import write_trajectories
    from ipr_lightning.envs.webshop.handle import expert_data

    handle, ids = _webshop(args)
    trajs = expert_data(handle.make_env(), ids, None)
    write_trajectories(args.out, trajs)
    print(f"wrote {len(trajs)} {args.split} expert trajectories to {args.out}")


def cmd_check_env(args: argparse.Namespace) -> None:
    from ipr_lightning.config import load_config
    from ipr_lightning.data.io import read_trajectories
    from ipr_lightning.envs import build_env
    from ipr_lightning.envs.check import check_env

    cfg = load_config(args.config, [f"env.name={args.name}", *args.overrides])
    split = args.split or cfg.env.train_split
    handle = build_env(cfg.env, split)
    if args.file:
        records, source = read_trajectories(args.file), args.file
    else:
        records, source = handle.expert(), f"{handle.name} {split} expert"
    records = records[: args.limit or None]
    report = check_env(handle, records, source, progress=not args.no_progress)
    for line in report.problems:
        print(line)
    bad = len(report.problems)
    print(
        f"check-env {handle.name} {split}: {report.records - bad} of {report.records} "
        f"trajectories replay exactly ({report.steps} steps)"
    )
    if bad:
        raise CheckFailed


def cmd_pairs_reference(args: argparse.Namespace) -> None:
    import lightning as L

    from ipr_lightning.cli import packs_pairs, pairs_module, pairs_with_reference
    from ipr_lightning.config import load_config
    from ipr_lightning.data.io import read_pairs
    from ipr_lightning.data.render import ensure_chat_template
    from ipr_lightning.lightning.datamodule import IPRDataModule
    from ipr_lightning.models import load_tokenizer
    from ipr_lightning.precision import resolve_precision

    cfg = load_config(args.config, args.overrides)
    if not cfg.data.pairs_file:
        raise UserError("set data.pairs_file (in --config or as data.pairs_file=PATH)")
    pairs = read_pairs(cfg.data.pairs_file)
    data = IPRDataModule(cfg.data, cfg.seed, shared_prefix=packs_pairs(cfg))
    data.connect(ensure_chat_template(load_tokenizer(cfg.model)))
    t = cfg.trainer
    trainer = L.Trainer(
        accelerator=t.accelerator,
        devices=1,
        precision=resolve_precision(t.precision, t.accelerator),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    module = pairs_module(cfg).to(trainer.strategy.root_device)
    forward = trainer.precision_plugin.forward_context()
    out = Path(args.out)
    rendered = pairs_with_reference(cfg, module, data, pairs, out, forward, compute=True)
    print(f"wrote {out}: {len(rendered.rows)} pairs with reference log-probs")


class CheckFailed(Exception):
    """check-env found mismatches (exit code 1; they are printed)."""


COMMANDS = {
    ("alfworld", "generate"): cmd_generate,
    ("alfworld", "trajectories"): cmd_trajectories,
    ("alfworld", "stats"): cmd_stats,
    ("sql", "server"): cmd_sql_server,
    ("sql", "stats"): cmd_sql_stats,
    ("webshop", "stats"): cmd_webshop_stats,
    ("webshop", "trajectories"): cmd_webshop_trajectories,
    ("check-env", None): cmd_check_env,
    ("pairs", "reference"): cmd_pairs_reference,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        COMMANDS[args.task, getattr(args, "command", None)](args)
    except CheckFailed:
        return 1
    except (
        UserError,
        ConfigError,
        DataFileError,
        FileNotFoundError,
        FileExistsError,
        ImportError,
    ) as exc:
        print(f"ipr-data: error: {exc}", file=sys.stderr)  # ImportError: alfworld missing
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
