"""Trajectory and pair files: both shapes round-trip; every malformation names file/record/field."""

import json
from pathlib import Path

import pytest

from ipr_lightning.data.io import (
    DataFileError,
    read_pairs,
    read_trajectories,
    write_pairs,
    write_trajectories,
)
from ipr_lightning.data.records import PreferencePair, Trajectory, Turn

CONV = [
    {"from": "human", "value": "instruction"},
    {"from": "gpt", "value": "OK"},
    {"from": "human", "value": "task"},
    {"from": "gpt", "value": "Thought: t\nAction: a"},
]


def dump(tmp_path: Path, data, name: str = "d.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_sharegpt_and_role_content_shapes_read_the_same(tmp_path):
    chat = [
        {"role": {"human": "user", "gpt": "assistant"}[t["from"]], "content": t["value"]}
        for t in CONV
    ]
    a = read_trajectories(dump(tmp_path, [{"id": "x", "conversations": CONV}], "a.json"))
    b = read_trajectories(dump(tmp_path, [{"id": "x", "conversations": chat}], "b.json"))
    assert a == b
    assert [t.role for t in a[0].turns] == ["user", "assistant", "user", "assistant"]


def test_round_trip_keeps_unknown_fields_and_reward(tmp_path):
    records = [{"id": 7, "game_file": "g/x.tw-pddl", "reward": 1.0, "conversations": CONV}]
    trajs = read_trajectories(dump(tmp_path, records))
    assert trajs[0].id == "7" and trajs[0].reward == 1.0
    assert trajs[0].meta == {"game_file": "g/x.tw-pddl"}
    for style in ("sharegpt", "chat"):
        out = tmp_path / f"out_{style}.json"
        write_trajectories(out, trajs, style=style)
        assert read_trajectories(out) == trajs


def test_jsonl_is_read_line_by_line(tmp_path):
    lines = "\n".join(json.dumps({"id": i, "conversations": CONV}) for i in range(3))
    assert len(read_trajectories(dump(tmp_path, lines + "\n", "d.jsonl"))) == 3
    bad = dump(tmp_path, lines + "\n{oops\n", "bad.jsonl")
    with pytest.raises(DataFileError, match="line 4"):
        read_trajectories(bad)


def swap(i: int, key: str, value):
    conv = json.loads(json.dumps(CONV))
    if value is None:
        del conv[i][key]
    else:
        conv[i][key] = value
    return conv


@pytest.mark.parametrize(
    ("record", "field", "problem"),
    [
        ({"conversations": CONV}, "id", "missing"),
        ({"id": "r"}, "conversations", "missing"),
        ({"id": "r", "conversations": []}, "conversations", "empty conversation"),
        ({"id": "r", "conversations": "hi"}, "conversations", "list of turns"),
        ({"id": "r", "conversations": swap(0, "from", "gpt")}, "conversations[0]", "role order"),
        ({"id": "r", "conversations": CONV[:2] + CONV[3:]}, "conversations[2]", "role order"),
        ({"id": "r", "conversations": swap(1, "from", "bot")}, "conversations[1].from", "role"),
        ({"id": "r", "conversations": swap(1, "value", None)}, "conversations[1].value", "missing"),
        ({"id": "r", "conversations": swap(1, "value", 3)}, "conversations[1].value", "string"),
        ({"id": "r", "conversations": CONV[:1]}, "conversations", "no assistant turn"),
        ({"id": "r", "conversations": CONV, "reward": "high"}, "reward", "number"),
        ({"id": "r", "conversations": CONV, "reward": float("nan")}, "reward", "finite"),
        ({"id": "r", "conversations": swap(3, "value", " \n")}, "conversations[3]", "empty"),
    ],
)
def test_malformed_trajectory_names_file_record_and_field(tmp_path, record, field, problem):
    good = {"id": "ok", "conversations": CONV}
    path = dump(tmp_path, [good, record])
    with pytest.raises(DataFileError) as info:
        read_trajectories(path)
    message = str(info.value)
    assert str(path) in message and "record 1" in message
    assert f"field '{field}'" in message and problem in message
    if "id" in record:
        assert "id='r'" in message
    assert "\n" not in message


def test_bad_json_duplicate_ids_and_top_level(tmp_path):
    with pytest.raises(DataFileError, match=r"bad JSON at line 1"):
        read_trajectories(dump(tmp_path, '[{"id": 1,'))
    with pytest.raises(DataFileError, match="top level must be a list"):
        read_trajectories(dump(tmp_path, {"id": 1}))
    with pytest.raises(DataFileError, match=r"record 1 \(id='a'\): field 'id': duplicate"):
        read_trajectories(dump(tmp_path, [{"id": "a", "conversations": CONV}] * 2))
    with pytest.raises(DataFileError, match="file not found"):
        read_trajectories(tmp_path / "missing.json")


def test_non_utf8_and_empty_files_are_one_line_errors_naming_the_file(tmp_path):
    """A bare UnicodeDecodeError without the file name, and an empty file that trained
    nothing and still reported an adapter (#16)."""
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'[{"id": "caf\xe9", "conversations": []}]')
    with pytest.raises(DataFileError, match=r"latin.json: not UTF-8 text: byte 0xe9 at offset 12"):
        read_trajectories(latin)
    for name, text in (("empty.json", "[]"), ("empty.jsonl", "\n")):
        (tmp_path / name).write_text(text)
        with pytest.raises(DataFileError, match=f"{name}: holds no trajectories"):
            read_trajectories(tmp_path / name)


PROMPT = [Turn("user", "instruction"), Turn("assistant", "OK"), Turn("user", "task")]


def make_pair(**kw) -> PreferencePair:
    base = dict(
        id="p",
        prompt=PROMPT,
        chosen=[Turn("assistant", "good")],
        rejected=[
            Turn("assistant", "bad"),
            Turn("user", "Observation: o"),
            Turn("assistant", "worse"),
        ],
        pair_type="step",
        chosen_reward=1.0,
        rejected_reward=0.0,
        iteration=2,
        ref_chosen_logp=-3.5,
        ref_rejected_logp=-9.0,
        meta={"prefix_len": 1},
    )
    base.update(kw)
    return PreferencePair(**base)


def test_pairs_round_trip_with_metadata(tmp_path):
    pairs = [
        make_pair(),
        make_pair(
            id="q", pair_type="outcome", ref_chosen_logp=None, ref_rejected_logp=None, meta={}
        ),
    ]
    write_pairs(tmp_path / "pairs.json", pairs)
    raw = json.loads((tmp_path / "pairs.json").read_text())
    assert raw[0]["prompt"][0] == {"from": "human", "value": "instruction"}
    assert raw[0]["chosen"] == [{"from": "gpt", "value": "good"}]
    assert read_pairs(tmp_path / "pairs.json") == pairs
    assert [p.is_step for p in pairs] == [True, False]


def test_pairs_round_trip_with_prompt_start(tmp_path):
    history = [Turn("assistant", "Action: go to drawer 1"), Turn("user", "Observation: closed")]
    pairs = [
        make_pair(prompt=PROMPT + history, prompt_start=3),
        make_pair(id="q", prompt_start=3),  # no history: prompt_start is the whole prompt
        make_pair(id="r"),
    ]
    for style in ("sharegpt", "chat"):
        write_pairs(tmp_path / "pairs.json", pairs, style=style)
        raw = json.loads((tmp_path / "pairs.json").read_text())
        assert [r.get("prompt_start") for r in raw] == [3, 3, None]
        assert "prompt_start" not in raw[2]
        assert read_pairs(tmp_path / "pairs.json") == pairs


@pytest.mark.parametrize(
    ("mutate", "field", "problem"),
    [
        (lambda r: r.pop("chosen"), "chosen", "missing"),
        (lambda r: r.update(prompt=r["prompt"][:2]), "prompt", "end with a user turn"),
        (lambda r: r.update(chosen=[{"from": "human", "value": "x"}]), "chosen[0]", "role order"),
        (lambda r: r.update(rejected=[]), "rejected", "empty"),
        (lambda r: r.update(pair_type="trajectory"), "pair_type", "one of"),
        (lambda r: r.update(iteration="2"), "iteration", "integer"),
        (lambda r: r.update(chosen_reward=[1]), "chosen_reward", "number"),
        (lambda r: r.update(prompt_start=-1), "prompt_start", "between 0 and the 3 prompt"),
        (lambda r: r.update(prompt_start=4), "prompt_start", "between 0 and the 3 prompt"),
        (lambda r: r.update(prompt_start="3"), "prompt_start", "must be an integer, got str"),
        (lambda r: r.update(prompt_start=True), "prompt_start", "must be an integer, got bool"),
        (lambda r: r.update(prompt_start=2), "prompt_start", "prompt turn 2 is a user turn"),
        (lambda r: r.update(ref_chosen_logp=float("nan")), "ref_chosen_logp", "finite number"),
        (lambda r: r.update(rejected_reward=float("inf")), "rejected_reward", "finite number"),
        (lambda r: r.update(rejected=r["chosen"]), "rejected", "identical to chosen"),
        (lambda r: r.update(chosen_reward=0.2, rejected_reward=0.9), "rejected_reward", "swapped"),
        (lambda r: r["chosen"][0].update(value=""), "chosen", "every assistant turn is empty"),
    ],
)
def test_malformed_pairs(tmp_path, mutate, field, problem):
    write_pairs(tmp_path / "p.json", [make_pair()])
    records = json.loads((tmp_path / "p.json").read_text())
    mutate(records[0])
    path = dump(tmp_path, records, "bad.json")
    with pytest.raises(DataFileError) as info:
        read_pairs(path)
    message = str(info.value)
    assert "record 0 (id='p')" in message and f"field '{field}'" in message
    assert problem in message and "\n" not in message


def test_trajectory_record_defaults():
    t = Trajectory("a", [Turn("user", "u"), Turn("assistant", "a")])
    assert t.reward is None and t.meta == {}


def test_a_trajectory_ending_on_a_user_turn_is_read_with_a_warning(tmp_path, caplog):
    records = [{"id": "a", "conversations": CONV}, {"id": "b", "conversations": [*CONV, CONV[2]]}]
    with caplog.at_level("WARNING"):
        assert len(read_trajectories(dump(tmp_path, records))) == 2
    assert "1 of 2 trajectories end on a user turn (first: id='b')" in caplog.text


def test_an_empty_rejected_completion_is_a_fair_negative(tmp_path):
    write_pairs(tmp_path / "p.json", [make_pair(rejected=[Turn("assistant", "")])])
    assert read_pairs(tmp_path / "p.json")[0].rejected == [Turn("assistant", "")]
