"""Read and write trajectory and preference-pair files, validating every record.

Accepted shapes (a JSON list, or JSON Lines with one record per line):

    trajectories  [{"id", "conversations": [{"from": "human"|"gpt"|"system", "value"}], ...}]
                  or turns as {"role": "user"|"assistant"|"system", "content"}
    pairs         [{"id", "prompt": [turns], "chosen": [turns], "rejected": [turns],
                    "pair_type": "outcome"|"step", "chosen_reward", "rejected_reward",
                    "iteration", "ref_chosen_logp", "ref_rejected_logp", "prompt_start", ...}]

Any problem raises `DataFileError` naming the file, the record (index and id) and the field.
No record is ever dropped silently; unknown fields are kept in `meta` and written back.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from ipr_lightning.data.records import (
    PAIR_TYPES,
    PreferencePair,
    Trajectory,
    Turn,
    history_turn_pairs,
)

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "system": "system"}
CHAT_ROLES = {"user": "user", "assistant": "assistant", "system": "system"}
TO_SHAREGPT = {"user": "human", "assistant": "gpt", "system": "system"}
PAIR_FIELDS = ("prompt", "chosen", "rejected")
log = logging.getLogger(__name__)
PAIR_SCALARS = ("chosen_reward", "rejected_reward", "ref_chosen_logp", "ref_rejected_logp")


class DataFileError(ValueError):
    """A malformed data file; the message names file, record and field."""

    def __init__(
        self,
        path: str | Path,
        problem: str,
        index: int | None = None,
        record_id: Any = None,
        field: str | None = None,
    ) -> None:
        where = str(path)
        if index is not None:
            where += f": record {index}"
            if record_id is not None:
                where += f" (id={record_id!r})"
        if field is not None:
            where += f": field '{field}'"
        super().__init__(f"{where}: {problem}")


def _load_records(path: Path) -> list[Any]:
    if not path.is_file():
        raise DataFileError(path, "file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataFileError(
            path, f"not UTF-8 text: byte {exc.object[exc.start]:#04x} at offset {exc.start}"
        ) from None
    if path.suffix == ".jsonl":
        records = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataFileError(path, f"bad JSON on line {lineno}: {exc.msg}") from None
        return records
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFileError(
            path, f"bad JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(data, list):
        raise DataFileError(path, f"top level must be a list of records, got {type(data).__name__}")
    return data


def _parse_turn(raw: Any, err: Any, field: str) -> Turn:
    if not isinstance(raw, dict):
        raise err(f"must be an object, got {type(raw).__name__}", field)
    if "from" in raw:
        role_key, text_key, roles = "from", "value", SHAREGPT_ROLES
    elif "role" in raw:
        role_key, text_key, roles = "role", "content", CHAT_ROLES
    else:
        raise err("has neither 'from' nor 'role'", field)
    role = roles.get(raw[role_key]) if isinstance(raw[role_key], str) else None
    if role is None:
        raise err(
            f"unknown role {raw[role_key]!r} (expected one of {sorted(roles)})",
            f"{field}.{role_key}",
        )
    if text_key not in raw:
        raise err("missing", f"{field}.{text_key}")
    if not isinstance(raw[text_key], str):
        raise err(f"must be a string, got {type(raw[text_key]).__name__}", f"{field}.{text_key}")
    return Turn(role, raw[text_key])


def _parse_turns(
    raw: Any, err: Any, field: str, first: str, need_assistant: bool = True
) -> list[Turn]:
    """Turns must alternate, start with `first` (after optional system turns) and be non-empty."""
    if not isinstance(raw, list):
        raise err(f"must be a list of turns, got {type(raw).__name__}", field)
    if not raw:
        raise err("empty conversation", field)
    turns = [_parse_turn(t, err, f"{field}[{i}]") for i, t in enumerate(raw)]
    expected = first
    for i, turn in enumerate(turns):
        if turn.role == "system":
            if i > 0 and turns[i - 1].role != "system":
                raise err("system turn after the conversation started", f"{field}[{i}]")
            continue
        if turn.role != expected:
            raise err(f"wrong role order: expected {expected}, got {turn.role}", f"{field}[{i}]")
        expected = "assistant" if expected == "user" else "user"
    if need_assistant and not any(t.role == "assistant" for t in turns):
        raise err("no assistant turn to learn from", field)
    return turns


def _check_no_empty_assistant_turn(turns: list[Turn], err: Any, field: str) -> None:
    """Expert data: an empty assistant turn teaches the model to say nothing."""
    for i, turn in enumerate(turns):
        if turn.role == "assistant" and not turn.content.strip():
            raise err("empty assistant turn", f"{field}[{i}]")


def _check_pair_sides(pair: PreferencePair, err: Any) -> None:
    """A pair must prefer a real completion over a different one. (An empty rejected one is
    a fair negative: an agent that answers nothing.)"""
    if not any(t.content.strip() for t in pair.chosen if t.role == "assistant"):
        raise err("every assistant turn is empty: nothing to prefer", "chosen")
    if pair.chosen == pair.rejected:
        raise err("identical to chosen: nothing to prefer", "rejected")
    if (
        pair.chosen_reward is not None
        and pair.rejected_reward is not None
        and pair.chosen_reward < pair.rejected_reward
    ):
        raise err(
            f"{pair.rejected_reward} is above chosen_reward {pair.chosen_reward}: chosen and "
            "rejected look swapped",
            "rejected_reward",
        )


def _errors(path: Path, index: int, record: Any):
    record_id = record.get("id") if isinstance(record, dict) else None

    def err(problem: str, field: str | None = None) -> DataFileError:
        return DataFileError(path, problem, index, record_id, field)

    return err


def _record_id(record: dict[str, Any], err: Any) -> str:
    if "id" not in record:
        raise err("missing", "id")
    if not isinstance(record["id"], str | int):
        raise err(f"must be a string or integer, got {type(record['id']).__name__}", "id")
    return str(record["id"])


def _number(record: dict[str, Any], key: str, err: Any) -> float | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise err(f"must be a number, got {type(value).__name__}", key)
    if not math.isfinite(value):
        raise err(f"must be a finite number, got {value}", key)
    return float(value)


def _prompt_start(record: dict[str, Any], prompt: list[Turn], err: Any) -> int | None:
    value = record.get("prompt_start")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise err(f"must be an integer, got {type(value).__name__}", "prompt_start")
    try:
        history_turn_pairs(prompt, value)
    except ValueError as exc:
        raise err(str(exc), "prompt_start") from None
    return value


def _check_unique(ids: list[str], path: Path) -> None:
    seen: dict[str, int] = {}
    for i, rid in enumerate(ids):
        if rid in seen:
            raise DataFileError(path, f"duplicate id (first at record {seen[rid]})", i, rid, "id")
        seen[rid] = i


def read_trajectories(path: str | Path) -> list[Trajectory]:
    """Read expert trajectories in either conversation shape; every record is validated."""
    path = Path(path)
    out, ends_on_user = [], []
    for index, record in enumerate(_load_records(path)):
        err = _errors(path, index, record)
        if not isinstance(record, dict):
            raise err(f"must be an object, got {type(record).__name__}")
        rid = _record_id(record, err)
        key = "conversations" if "conversations" in record else "messages"
        if key not in record:
            raise err("missing", "conversations")
        turns = _parse_turns(record[key], err, key, first="user")
        _check_no_empty_assistant_turn(turns, err, key)
        if turns[-1].role == "user":
            ends_on_user.append(rid)
        meta = {k: v for k, v in record.items() if k not in ("id", key, "reward")}
        out.append(Trajectory(rid, turns, _number(record, "reward", err), meta))
    if not out:  # would train nothing and still report an adapter
        raise DataFileError(path, "holds no trajectories")
    _check_unique([t.id for t in out], path)
    if ends_on_user:
        log.warning(
            "%s: %d of %d trajectories end on a user turn (first: id=%r); nothing is learnt "
            "from a last user turn",
            path,
            len(ends_on_user),
            len(out),
            ends_on_user[0],
        )
    return out


def read_pairs(path: str | Path) -> list[PreferencePair]:
    """Read preference pairs; prompt ends before an assistant turn, completions start with one."""
    path = Path(path)
    out = []
    for index, record in enumerate(_load_records(path)):
        err = _errors(path, index, record)
        if not isinstance(record, dict):
            raise err(f"must be an object, got {type(record).__name__}")
        rid = _record_id(record, err)
        for key in PAIR_FIELDS:
            if key not in record:
                raise err("missing", key)
        prompt = _parse_turns(record["prompt"], err, "prompt", "user", need_assistant=False)
        if prompt[-1].role != "user":
            raise err("must end with a user turn", "prompt")
        chosen = _parse_turns(record["chosen"], err, "chosen", first="assistant")
        rejected = _parse_turns(record["rejected"], err, "rejected", first="assistant")
        pair_type = record.get("pair_type", "outcome")
        if pair_type not in PAIR_TYPES:
            raise err(f"must be one of {PAIR_TYPES}, got {pair_type!r}", "pair_type")
        iteration = record.get("iteration")
        if iteration is not None and (
            isinstance(iteration, bool) or not isinstance(iteration, int)
        ):
            raise err(f"must be an integer, got {type(iteration).__name__}", "iteration")
        scalars = {k: _number(record, k, err) for k in PAIR_SCALARS}
        known = {"id", "pair_type", "iteration", "prompt_start", *PAIR_FIELDS, *PAIR_SCALARS}
        meta = {k: v for k, v in record.items() if k not in known}
        pair = PreferencePair(
            rid,
            prompt,
            chosen,
            rejected,
            pair_type,
            iteration=iteration,
            meta=meta,
            prompt_start=_prompt_start(record, prompt, err),
            **scalars,
        )
        _check_pair_sides(pair, err)
        out.append(pair)
    _check_unique([p.id for p in out], path)
    return out


def turns_to_json(turns: list[Turn], style: str = "sharegpt") -> list[dict[str, str]]:
    if style == "sharegpt":
        return [{"from": TO_SHAREGPT[t.role], "value": t.content} for t in turns]
    if style == "chat":
        return [{"role": t.role, "content": t.content} for t in turns]
    raise ValueError(f"unknown turn style {style!r} (sharegpt or chat)")


def turns_from_json(raw: list[dict[str, str]]) -> list[Turn]:
    """Turns written by `turns_to_json` (either style) back; for the project's own files."""
    out = []
    for t in raw:
        if "from" in t:
            out.append(Turn(SHAREGPT_ROLES[t["from"]], t["value"]))
        else:
            out.append(Turn(CHAT_ROLES[t["role"]], t["content"]))
    return out


def _write_json(path: str | Path, records: list[dict[str, Any]]) -> None:
    """Write atomically: a reader never sees a half-written file (nor do two writers, e.g.
    the ranks of a torchrun job, share a temporary file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def write_trajectories(
    path: str | Path, trajectories: list[Trajectory], style: str = "sharegpt"
) -> None:
    records = []
    for t in trajectories:
        record: dict[str, Any] = {"id": t.id, **t.meta}
        if t.reward is not None:
            record["reward"] = t.reward
        record["conversations"] = turns_to_json(t.turns, style)
        records.append(record)
    _write_json(path, records)


def write_pairs(path: str | Path, pairs: list[PreferencePair], style: str = "sharegpt") -> None:
    records = []
    for p in pairs:
        record: dict[str, Any] = {"id": p.id, "pair_type": p.pair_type, "iteration": p.iteration}
        for key in PAIR_FIELDS:
            record[key] = turns_to_json(getattr(p, key), style)
        record.update({k: getattr(p, k) for k in PAIR_SCALARS if getattr(p, k) is not None})
        if p.prompt_start is not None:
            record["prompt_start"] = p.prompt_start
        record.update(p.meta)
        records.append(record)
    _write_json(path, records)
