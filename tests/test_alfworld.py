"""ALFWorld on the real engine: generated games, the env, expert data and `ipr-data`.

Needs `pip install alfworld==0.4.2` (skipped otherwise). One small generated set (24/6/6) is
shared by the whole module; the file runs in about a minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("alfworld")

from ipr_lightning.data.io import read_trajectories, write_trajectories  # noqa: E402
from ipr_lightning.data.records import Turn  # noqa: E402
from ipr_lightning.envs.alfworld.engine import (  # noqa: E402
    TASK_TYPES,
    GameEngine,
    convert_action,
    list_games,
    split_dir,
    task_type_of,
)
from ipr_lightning.envs.alfworld.env import AlfworldEnv  # noqa: E402
from ipr_lightning.envs.alfworld.games import (  # noqa: E402
    default_games_dir,
    expert_trajectories,
    generate_games,
    plan_split,
    resolve_alfworld_data,
)
from ipr_lightning.envs.base import build_prompt, parse_react  # noqa: E402

SIZES = {"n_train": 24, "n_seen": 6, "n_unseen": 6, "seed": 0}
SPLITS = ("train", "valid_seen", "valid_unseen")
IPR_DATA = Path(sys.executable).parent / "ipr-data"


@pytest.fixture(scope="session")
def games(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("alfworld") / "games"
    result = generate_games(out, **SIZES, workers=2, progress=False)
    assert result["cached"] is False
    return out


@pytest.fixture(scope="session")
def train_trajs(games: Path) -> list:
    return expert_trajectories(games, "train", progress=False, workers=2)


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _replay(env: AlfworldEnv, game_id: str, actions: list[str]) -> tuple[list[str], float, bool]:
    obs, _ = env.reset(options={"task_id": game_id})
    seen, reward, done = [obs], 0.0, False
    for action in actions:
        obs, reward, done, truncated, _ = env.step(f"Thought: replay.\nAction: {action}")
        seen.append(obs)
        if done or truncated:
            break
    return seen, reward, done


def _actions(traj) -> list[str]:
    return [parse_react(t.content).action for t in traj.turns[2:] if t.role == "assistant"]


def test_every_split_has_all_six_task_types(games: Path):
    manifest = json.loads((games / "manifest.json").read_text())
    for split, n in zip(SPLITS, (24, 6, 6), strict=True):
        ids = list_games(games, split_dir(games, split))
        assert len(ids) == n
        assert sorted({task_type_of(g) for g in ids}) == sorted(TASK_TYPES)
        counted = {t: sum(task_type_of(g) == t for g in ids) for t in TASK_TYPES}
        assert counted == manifest["counts"][split]


def test_every_training_trajectory_replays_to_won(games: Path, train_trajs: list):
    env = AlfworldEnv(games, "train")  # no expert: only the recorded actions are played
    assert [t.id for t in train_trajs] == env.task_ids() and len(train_trajs) == 24
    for traj in train_trajs:
        assert traj.reward == 1.0 and traj.meta["game_file"] == traj.id
        seen, reward, done = _replay(env, traj.meta["game_file"], _actions(traj))
        recorded = [traj.turns[2].content] + [
            t.content.removeprefix("Observation: ") for t in traj.turns[3:] if t.role == "user"
        ]
        assert (reward, done) == (1.0, True), traj.id
        assert seen[: len(recorded)] == recorded  # the file holds the engine's own text


def test_generation_is_byte_identical_under_another_hash_seed(games: Path, tmp_path: Path):
    code = textwrap.dedent(f"""
        from ipr_lightning.envs.alfworld.games import generate_games
        generate_games({str(tmp_path / "again")!r}, **{SIZES!r}, workers=2, progress=False)
    """)
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=300)
    assert _files(tmp_path / "again") == _files(games)


def test_killed_generation_resumes_to_the_same_files(games: Path, tmp_path: Path):
    out = tmp_path / "killed"
    code = textwrap.dedent(f"""
        from ipr_lightning.envs.alfworld.games import generate_games
        generate_games({str(out)!r}, **{SIZES!r}, workers=2, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code])
    journal = out / "progress.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.is_file() and len(journal.read_text().splitlines()) >= 10:
            break
        time.sleep(0.05)
    proc.kill()  # SIGKILL of the parent only: no cleanup, workers mid-game
    proc.wait()
    assert not (out / "manifest.json").exists()
    left = _files(out)
    time.sleep(1.5)
    assert _files(out) == left  # the workers died with the parent: no orphan still writing
    result = generate_games(out, **SIZES, workers=2, progress=False)
    assert result["cached"] is False and 10 <= result["resumed"] < 36
    assert _files(out) == _files(games)  # nothing lost, nothing duplicated or left over


def test_cache_hit_is_immediate_and_parameters_pick_the_folder(games: Path):
    start = time.perf_counter()
    again = generate_games(games, **SIZES, workers=2, progress=False)
    assert again["cached"] is True and time.perf_counter() - start < 2
    assert default_games_dir(24, 6, 6, 0) != default_games_dir(24, 6, 6, 1)
    assert default_games_dir(24, 6, 6, 0) == default_games_dir(24, 6, 6, 0)
    with pytest.raises(FileExistsError):  # never overwrite data it did not write
        generate_games(_official_tree(games, games.parent / "official"), 1, 1, 1)


def _official_tree(games: Path, root: Path) -> Path:
    """A user's official-style data folder, written here: one valid_seen game plus entries
    AlfredTWEnv skips (movable, Sliced, unsolvable)."""
    game = list_games(games, split_dir(games, "valid_seen"))[0]
    src = (games / game).parent
    task = src.parent.name
    for name, solvable in (
        (task, True),
        ("pick_and_place_with_movable_recep-X-Y-Z-1", True),
        (task.replace("-None-", "-Sliced-"), True),
        (task + "9", False),
    ):
        dst = root / "json_2.1.1" / "valid_seen" / name / "trial_T20190909_000000_000001"
        shutil.copytree(src, dst, dirs_exist_ok=True)
        if not solvable:
            data = json.loads((dst / "game.tw-pddl").read_text())
            (dst / "game.tw-pddl").write_text(json.dumps({**data, "solvable": False}))
    return root


def test_official_layout_loads_through_the_same_env(games: Path, tmp_path: Path):
    root = _official_tree(games, tmp_path / "alfworld_data")
    env = AlfworldEnv(root, "valid_seen")
    ids = env.task_ids()
    assert len(ids) == 1 and ids[0].startswith("json_2.1.1/valid_seen/")
    obs, info = env.reset(options={"task_id": ids[0]})
    assert obs.startswith("You are in the middle of a room.") and "Welcome" not in obs
    assert "\nYour task is to: " in obs and info["won"] is False


def _put_vintage_game(games: Path, game: str, tmp_path: Path) -> Path:
    """A copy of `game` whose grammar is the 0.3.x vintage (`put {o} in/on {r}`)."""
    dst = tmp_path / "old" / Path(game).parent
    shutil.copytree((games / game).parent, dst)
    data = json.loads((dst / "game.tw-pddl").read_text())
    grammar = data["grammar"].replace(
        'template :: "move {o} to {r}";\n    feedback :: "#PutObject.feedback#"',
        'template :: "put {o} in/on {r}";\n    feedback :: "#PutObject.feedback#"',
    )
    assert grammar != data["grammar"]
    (dst / "game.tw-pddl").write_text(json.dumps({**data, "grammar": grammar}))
    return tmp_path / "old"


def test_put_and_move_vintages_both_replay_on_both_grammars(games, train_trajs, tmp_path):
    traj = next(t for t in train_trajs if any(a.startswith("put ") for a in _actions(t)))
    game, put = traj.id, _actions(traj)
    assert any(a.startswith("put ") and " in/on " in a for a in put)
    old_root = _put_vintage_game(games, game, tmp_path)
    move = [convert_action(a, "move") for a in put]
    assert any(a.startswith("move ") for a in move) and move != put
    for root in (games, old_root):
        env = AlfworldEnv(root, "train")
        for actions in (put, move):
            assert _replay(env, game, actions)[1:] == (1.0, True)
        assert env.engine_style == ("move" if root == games else "put")
    forced = AlfworldEnv(games, "train", action_style="put")  # wrong vintage for this game
    assert _replay(forced, game, put)[1] == 0.0


def test_invalid_malformed_and_sloppy_actions(games: Path):
    env = AlfworldEnv(games, "train")
    obs, _ = env.reset(options={"task_id": env.task_ids()[0]})
    first = re.search(r"you see an? ([a-z]+ \d+)", obs)[1]
    bad = env.step("Thought: hmm.\nAction: fly to the moon")
    assert bad[0] == "Nothing happens." and bad[1:4] == (0.0, False, False)
    assert bad[4]["invalid"] and not bad[4]["malformed"]
    for output in ("I will just wander.", "Thought: x\nAction:   ", ""):
        obs, reward, done, truncated, info = env.step(output)
        assert obs == "Nothing happens." and info["invalid"] and info["malformed"]
    sloppy = env.step(f"Thought: go.\nAction:   GO  To   {first.upper()} \nsecond line")
    assert sloppy[0].startswith(f"You arrive at {first}.") and not sloppy[4]["invalid"]


def test_truncation_at_max_turns(games: Path):
    env = AlfworldEnv(games, "train", max_turns=3)
    env.reset(options={"task_id": env.task_ids()[0]})
    flags = [env.step("Action: look")[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]


def test_reset_returns_to_the_chosen_game(games: Path):
    env = AlfworldEnv(games, "train", expert=True)
    a, b = env.task_ids()[:2]
    first, info = env.reset(options={"task_id": a})
    assert info["expert_plan"] and info["task_type"] == task_type_of(a)
    env.step("Action: " + info["expert_plan"][0])
    other, _ = env.reset(options={"task_id": b})
    again, info2 = env.reset(options={"task_id": a})
    assert again == first != other and info2["expert_plan"] == info["expert_plan"]
    with pytest.raises(KeyError):
        env.reset(options={"task_id": "json_2.1.1/train/nope/game.tw-pddl"})


def _downward_copies() -> int:
    """fast-downward library copies this process has mapped (one per engine ever built)."""
    maps = Path("/proc/self/maps").read_text().splitlines()
    return len({line.split()[4] for line in maps if "libdownward" in line})  # inodes


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads Linux /proc")
def test_closed_envs_hand_their_engine_on_so_library_copies_stay_bounded(games: Path):
    # Each engine maps its own 34 MB copy of the library for the rest of the process: one per
    # environment ever made filled the disk in a 3-seed ipr-bench.
    game = AlfworldEnv(games, "valid_seen").task_ids()[0]
    before = _downward_copies()
    observations = []
    for _ in range(6):  # an evaluation after an evaluation after ...: a pool made, closed
        pool = [AlfworldEnv(games, "valid_seen") for _ in range(2)]
        for env in pool:
            observations.append(env.reset(options={"task_id": game})[0])
            env.close()
    assert _downward_copies() - before <= 2  # the pool's two (listing games takes none)
    assert len(set(observations)) == 1
    # A closed env plays again, on an engine that last played another game.
    env = pool[0]
    other = AlfworldEnv(games, "valid_seen")
    second = other.task_ids()[1]
    other.reset(options={"task_id": second})
    other.close()
    env.reset(options={"task_id": game})
    obs, _, _, _, _ = env.step("Action: look")
    assert "Nothing happens" not in obs and env.engine.game_file.endswith(game)


def test_rationales_only_mention_what_was_seen(train_trajs: list):
    for traj in train_trajs:
        seen = traj.turns[2].content
        for turn in traj.turns[3:]:
            if turn.role == "user":
                seen += "\n" + turn.content
                continue
            thought = parse_react(turn.content).thought
            assert thought and len(thought) < 400
            for name in re.findall(r"\b([a-z]+) (\d+)\b", thought):
                assert " ".join(name) in seen, (traj.id, thought)
            for what, where in re.findall(
                r"There is no (\w+) (?:in|on) (?:the )?(\w+ \d+)", thought
            ):
                start = max(
                    seen.rfind(f"You arrive at {where}."), seen.rfind(f"You open the {where}.")
                )
                last = seen[start:].split("\nObservation: ")[0]
                assert start >= 0 and not re.search(rf"\b{what} \d", last), (traj.id, thought)


def test_in_context_example_is_a_training_game(games: Path):
    env = AlfworldEnv(games, "valid_unseen")
    example = env.example_for("pick_heat_then_place_in_recep")
    assert example[0].role == "user" and example[-1].role == "assistant"
    assert "Your task is to: " in example[0].content
    assert any(t.content.split("Action: ")[-1].startswith("heat ") for t in example[1::2])
    prompt = build_prompt(env.instruction, "task", example)
    assert prompt[2:-1] == example and prompt[-1].content == "task"


def test_cached_engine_matches_the_plain_engine(games: Path):
    """The engine caches change nothing: same text, commands and wins as TextWorld as
    shipped (a fresh process that never installs them)."""
    paths = [str(games / g) for g in list_games(games, split_dir(games, "valid_seen"))[:3]]
    code = textwrap.dedent(f"""
        import json, textworld
        from textworld.envs import PddlEnv
        from alfworld.agents.environment.alfred_tw_env import AlfredDemangler
        infos = textworld.EnvInfos(won=True, admissible_commands=True)
        env, out = AlfredDemangler(PddlEnv(infos), shuffle=False), []
        for p in {paths!r}:
            env.load(p)
            st = env.reset()
            out.append([st.feedback, st["admissible_commands"], st["won"]])
            for c in json.load(open(p))["walkthrough"] + ["inventory", "open sky 1"]:
                st, _, _ = env.step(c)
                out.append([st.feedback, st["admissible_commands"], st["won"]])
        print(json.dumps(out))
    """)
    plain = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], check=True, timeout=300, capture_output=True, text=True
        ).stdout
    )
    engine, out = GameEngine(), []
    for p in paths:
        engine.load(p)
        st = engine.reset()
        out.append([st["feedback"], st["admissible_commands"], st["won"]])
        for c in json.loads(Path(p).read_text())["walkthrough"] + ["inventory", "open sky 1"]:
            st = engine.step(c)
            out.append([st["feedback"], st["admissible_commands"], st["won"]])
    assert out == plain and sum(row[2] for row in out) >= 3


def test_resolve_prefers_official_data_else_generated(games, tmp_path, monkeypatch, caplog):
    official = _official_tree(games, tmp_path / "official")
    monkeypatch.setenv("ALFWORLD_DATA", str(official))
    assert resolve_alfworld_data(**SIZES) == official
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError):
        resolve_alfworld_data(**SIZES)
    monkeypatch.delenv("ALFWORLD_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    shutil.copytree(games, default_games_dir(24, 6, 6, 0))  # a finished earlier generation
    with caplog.at_level("WARNING"):
        assert resolve_alfworld_data(**SIZES, progress=False) == default_games_dir(24, 6, 6, 0)
        resolve_alfworld_data(**SIZES, progress=False)  # another split of the same run
    assert caplog.text.count("NOT results on the official ALFWorld split") == 1


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(IPR_DATA), *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_ipr_data_generate_stats_trajectories(games: Path, tmp_path: Path, tiny_model_dir: str):
    gen = _cli(
        "alfworld",
        "generate",
        "--out",
        str(games),
        "--train",
        "24",
        "--seen",
        "6",
        "--unseen",
        "6",
        "--no-progress",
    )
    assert gen.returncode == 0 and "(cached)" in gen.stdout and "NOT" in gen.stdout
    stats = _cli(
        "alfworld",
        "stats",
        "--data",
        str(games),
        "--limit",
        "2",
        "--workers",
        "1",
        "--tokenizer",
        tiny_model_dir,
        "--no-progress",
    )
    assert stats.returncode == 0, stats.stderr
    assert re.search(r"pick_two_obj_and_place\s+\d+\s+1\s+1", stats.stdout)
    assert re.search(r"valid_unseen \(2\)\s+[\d.]+ / \d+ / \d+\s+[\d.]+ / \d+", stats.stdout)
    per_type = re.findall(r"\n  ([a-z_]+)\s+[\d.]+ / \d+ / \d+\s+[\d.]+ / \d+", stats.stdout)
    assert per_type and set(per_type) <= set(TASK_TYPES)  # steps and tokens per task type
    out = tmp_path / "train.json"
    traj = _cli(
        "alfworld",
        "trajectories",
        "--data",
        str(games),
        "--limit",
        "3",
        "--out",
        str(out),
        "--workers",
        "1",
        "--no-progress",
    )
    assert traj.returncode == 0, traj.stderr
    records = read_trajectories(out)
    assert [r.meta["game_file"] for r in records] == list_games(
        games, games / "json_2.1.1" / "train"
    )[:3]


def test_ipr_data_user_mistakes_exit_2_with_one_line(tmp_path: Path):
    for args in (
        ("alfworld", "generate", "--train", "-5"),
        ("alfworld", "stats", "--data", str(tmp_path / "nowhere")),
    ):
        proc = _cli(*args)
        assert proc.returncode == 2 and proc.stdout == ""
        assert len(proc.stderr.strip().splitlines()) == 1 and "error" in proc.stderr


def _handle(games: Path, split: str, max_turns: int = 20, in_context_example=False, **options):
    from ipr_lightning.config import EnvConfig
    from ipr_lightning.envs import build_env

    options = {"data_dir": str(games), **options}
    cfg = EnvConfig("alfworld", max_turns=max_turns, in_context_example=in_context_example)
    return build_env(replace(cfg, options=options), split)


def test_oracle_scores_100_and_random_near_0_through_batched_evaluation(
    games, train_trajs, tmp_path
):
    from ipr_lightning.rollout.evaluate import evaluate
    from ipr_lightning.rollout.policy import Sampling, ScriptedPolicy

    handle = _handle(games, "train")
    assert handle.task_ids == [t.id for t in train_trajs]
    script = {t.turns[2].content: [t.content for t in t.turns[3::2]] for t in train_trajs}

    def oracle(history):  # the expert's outputs for this task, in order
        return script[history[2].content][(len(history) - 3) // 2]

    policy = ScriptedPolicy(oracle)
    report, episodes = evaluate(
        handle, policy, Sampling(), max_live=8, out_dir=tmp_path, progress=False
    )
    assert (report.episodes, report.success_rate, report.invalid_rate) == (24, 1.0, 0.0)
    assert max(policy.calls) == 8  # lock-step: one call serves every live episode
    assert len((tmp_path / "transcripts.jsonl").read_text().splitlines()) == 24

    rng = random.Random(0)

    def wander(history):
        seen = re.findall(r"\b([a-z]+ \d+)\b", history[2].content)
        verb = rng.choice(["go to", "open", "close", "examine", "take"])
        return f"Thought: maybe.\nAction: {verb} {rng.choice(seen)}"

    report, _ = evaluate(handle, ScriptedPolicy(wander), Sampling(), max_live=24, progress=False)
    assert report.success_rate <= 0.1 and report.avg_turns > 15


def test_handle_uses_one_in_context_example_per_task_type_everywhere(games: Path):
    handle = _handle(games, "valid_seen", in_context_example=True)
    env = handle.make_env()
    task_id = handle.task_ids[0]
    obs, _ = env.reset(options={"task_id": task_id})
    start = handle.build_start(env, obs)
    example = start[2:-1]
    assert start[-1].content == obs and example[0].role == "user"
    assert example == env.example_for(task_type_of(task_id))
    assert "json_2.1.1/train/" in train_id_of(example, games)
    expert = handle.expert()  # the SFT data carries the very same example
    assert expert[0].turns[: len(start)] == start
    assert _handle(games, "valid_seen").build_start(env, obs)[2:-1] == []


def test_task_types_keep_only_those_games_everywhere(games: Path):
    from ipr_lightning.config import ConfigError

    kept = ["pick_and_place_simple", "pick_heat_then_place_in_recep"]
    handle = _handle(games, "train", task_types=kept)
    all_ids = _handle(games, "train").task_ids
    assert handle.task_ids == [t for t in all_ids if task_type_of(t) in kept]
    assert 0 < len(handle.task_ids) < len(all_ids)
    assert [t.meta["game_file"] for t in handle.expert()] == handle.task_ids
    with pytest.raises(ConfigError, match="unknown \\['pick_and_place'\\]"):
        _handle(games, "train", task_types=["pick_and_place"])


def test_games_too_long_for_max_turns_are_left_out_of_the_expert_data(games, train_trajs, caplog):
    steps = {t.id: sum(x.role == "assistant" for x in t.turns) - 1 for t in train_trajs}
    with caplog.at_level("WARNING"):
        short = expert_trajectories(games, "train", progress=False, max_turns=6)
    assert [t.id for t in short] == [i for i, n in steps.items() if n <= 6]
    assert 0 < len(short) < len(train_trajs)
    assert f"{len(train_trajs) - len(short)} of {len(train_trajs)} games need more" in caplog.text


def train_id_of(example, games: Path) -> str:
    """The training game whose first observation is the example's task."""
    env = AlfworldEnv(games, "train")
    for game in env.task_ids():
        if env.reset(options={"task_id": game})[0] == example[0].content:
            return game
    return ""


def test_config_mistakes_are_one_line_config_errors(games: Path, tmp_path: Path, monkeypatch):
    from ipr_lightning.config import ConfigError

    with pytest.raises(ConfigError, match="env.options.data_dir"):
        _handle(tmp_path / "nowhere", "train")
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path / "nowhere"))
    from ipr_lightning.config import EnvConfig
    from ipr_lightning.envs import build_env

    with pytest.raises(ConfigError, match="ALFWORLD_DATA"):
        build_env(EnvConfig(name="alfworld"), "train")
    with pytest.raises(ConfigError, match="split"):
        _handle(games, "test")


@pytest.mark.slow
def test_ipr_fit_on_the_expert_then_ipr_eval(games: Path, tiny_model_cfg, tmp_path: Path):
    """The installed CLIs on ALFWorld: SFT data played by the expert, then batched eval."""
    root = Path(__file__).resolve().parents[1]
    bindir = Path(sys.executable).parent
    out = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline"}
    shared = [f"env.options.data_dir={games}", f"--model.cache_dir={tiny_model_cfg.cache_dir}"]
    fit = subprocess.run(
        [
            str(bindir / "ipr-fit"),
            "--config",
            str(root / "configs/tiny.yaml"),
            *shared,
            f"output_dir={out}",
            "env.name=alfworld",
            "data.train_file=env:expert",
            "trainer.max_epochs=1",
            "data.max_length=2048",
            "env.options.workers=1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    sft = read_trajectories(out / "expert_trajectories.json")
    assert len(sft) == 24 and all(t.meta["game_file"] == t.id for t in sft)
    ev = subprocess.run(
        [
            str(bindir / "ipr-eval"),
            "--run",
            str(out),
            *shared,
            "eval.max_episodes=2",
            "env.max_turns=2",
            "eval.max_new_tokens=8",
            "eval.split=valid_seen",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ev.returncode == 0, ev.stderr[-3000:]
    lines = (out / "eval/valid_seen/transcripts.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert (
        len(lines) == 2
        and first["turns"] == 2
        and first["task_id"].startswith("json_2.1.1/valid_seen/")
    )
    assert first["conversations"][0]["value"] == AlfworldEnv.instruction


@pytest.mark.slow
def test_ipr_iteration_on_generated_games(games: Path, tiny_model_cfg, tmp_path: Path):
    """SFT then one IPR iteration on real ALFWorld games (tiny model): the expert prefixes
    replay in the engine and the pairs come out in the paper's shape with game files."""
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "ipr"
    fit = subprocess.run(
        [
            str(Path(sys.executable).parent / "ipr-fit"),
            "--config",
            str(root / "configs/tiny.yaml"),
            f"output_dir={out}",
            f"--model.cache_dir={tiny_model_cfg.cache_dir}",
            f"env.options.data_dir={games}",
            "env.name=alfworld",
            "data.train_file=env:expert",
            "data.max_length=2048",
            "env.options.workers=1",
            "trainer.max_epochs=1",
            "ipr.iterations=1",
            "ipr.epochs=1",
            "ipr.max_tasks=2",
            "ipr.mc_samples=1",
            "ipr.max_new_tokens=6",
            "eval.max_episodes=2",
            "eval.max_new_tokens=6",
            "eval.split=valid_seen",
        ],
        env={**os.environ, "WANDB_MODE": "offline"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    pairs = json.loads((out / "iter_1" / "pairs.json").read_text())
    stats = json.loads((out / "iter_1" / "stats.json").read_text())
    assert pairs and stats["explore/episodes"] == sum(
        sum(t["from"] == "gpt" for t in traj["conversations"][3:])
        for traj in json.loads((out / "expert_trajectories.json").read_text())[:2]
    )
    outcome = next(p for p in pairs if p["pair_type"] == "outcome")
    assert outcome["task_id"].startswith("json_2.1.1/train/") and outcome["winner"] == "expert"
    assert outcome["prompt"][-1]["value"].startswith("You are in the middle of a room.")
    assert "per phase" in fit.stdout and "iteration 1" in fit.stdout


def test_generating_only_some_task_types(tmp_path: Path):
    """`env.options.generate_task_types`: every game of the split is of the listed types (spread
    evenly), a different cache from the all-types generation of the same sizes, which keeps
    its old folder name; a real engine game of the type comes out."""
    specs = plan_split("train", 7, 0, 20, ["pick_and_place_simple", "look_at_obj_in_light"])
    assert [s.task_type for s in specs].count("look_at_obj_in_light") == 4
    assert {s.task_type for s in specs} == {"pick_and_place_simple", "look_at_obj_in_light"}
    assert default_games_dir(24, 6, 6, 0) != default_games_dir(24, 6, 6, 0, 20, ["x"])
    assert default_games_dir(24, 6, 6, 0) == default_games_dir(24, 6, 6, 0, 20, ())
    manifest = generate_games(
        tmp_path / "g", 2, 1, 1, 0, workers=1, progress=False, task_types=["look_at_obj_in_light"]
    )
    assert manifest["counts"]["train"]["look_at_obj_in_light"] == 2
    assert sum(manifest["counts"]["train"].values()) == 2
    with pytest.raises(ValueError, match="unknown task types"):
        generate_games(tmp_path / "h", 1, 1, 1, task_types=["juggle"])


def test_expert_is_played_once_then_read_from_its_cache(games, tmp_path, monkeypatch, caplog):
    import ipr_lightning.envs.alfworld.handle as alfworld_handle

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    played = _handle(games, "train").expert()
    monkeypatch.setattr(alfworld_handle, "expert_trajectories", _never_called)
    again = _handle(games, "train").expert()
    assert [(t.id, t.turns, t.reward, t.meta) for t in again] == [
        (t.id, t.turns, t.reward, t.meta) for t in played
    ]
    # other settings are other files: a shorter max_turns plays the expert again
    with pytest.raises(AssertionError, match="played"):
        _handle(games, "train", max_turns=6).expert()
    # a damaged cache is replayed, with a warning, not trusted
    (cached,) = (tmp_path / "cache").rglob("train-*.json")
    cached.write_text('[{"id": "x"', encoding="utf-8")
    monkeypatch.setattr(alfworld_handle, "expert_trajectories", lambda *a, **k: played[:1])
    with caplog.at_level("WARNING"):
        assert _handle(games, "train").expert() == played[:1]
    assert "cache unreadable" in caplog.text
    assert [t.id for t in read_trajectories(cached)] == [played[0].id]


def _never_called(*args, **kwargs):
    raise AssertionError("the expert was played again")


def test_check_env_replays_the_alfworld_expert_on_the_real_engine(
    games, train_trajs, tmp_path, monkeypatch, capsys
):
    from ipr_lightning.data_cli import main as ipr_data

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    args = ["check-env", "alfworld", f"env.options.data_dir={games}", "--no-progress"]
    assert ipr_data(args) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    n = len(train_trajs)
    assert last.startswith(f"check-env alfworld train: {n} of {n} trajectories replay exactly")
    broken = [replace(t) for t in train_trajs]
    broken[0] = replace(broken[0], turns=[*broken[0].turns[:4], Turn("user", "Observation: x")])
    broken[0].turns.extend(train_trajs[0].turns[5:])
    write_trajectories(tmp_path / "broken.json", broken)
    assert ipr_data([*args, f"--file={tmp_path / 'broken.json'}"]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and "record 0 " in out[0] and "conversations[4]: observation" in out[0]
