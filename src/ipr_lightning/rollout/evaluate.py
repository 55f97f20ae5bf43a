"""Evaluate a policy on held-out tasks: all live episodes step together (one batched model
call per turn), per-episode transcripts as JSONL, and a summary.

Success = the episode ended with reward 1 (ALFWorld: won). Invalid-action rate = policy
actions that the env rejected or could not parse, over all policy actions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ipr_lightning.data.io import turns_to_json
from ipr_lightning.envs.base import EnvHandle
from ipr_lightning.rollout.engine import Episode, EpisodeSpec, run_episodes
from ipr_lightning.rollout.policy import Policy, Sampling
from ipr_lightning.rollout.shard import Shard


@dataclass
class EvalReport:
    episodes: int
    success_rate: float
    avg_reward: float
    avg_turns: float
    invalid_rate: float
    malformed_rate: float
    generated_tokens: int
    wall_seconds: float
    by_group: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per task group (InterCode-SQL: hardness): episodes, success rate, average reward."""

    def table(self) -> str:
        groups = "".join(
            f"\n  {name:<14} {g['episodes']:.0f} episodes, success {g['success_rate']:.3f}, "
            f"avg reward {g['avg_reward']:.3f}"
            for name, g in self.by_group.items()
        )
        return (
            f"  episodes       {self.episodes}\n"
            f"  success rate   {self.success_rate:.3f}\n"
            f"  avg reward     {self.avg_reward:.3f}\n"
            f"  avg turns      {self.avg_turns:.2f}\n"
            f"  invalid rate   {self.invalid_rate:.3f} "
            f"(malformed output {self.malformed_rate:.3f})\n"
            f"  tokens         {self.generated_tokens} generated in "
            f"{self.wall_seconds:.1f} s" + groups
        )


def success(ep: Episode) -> bool:
    return ep.terminated and ep.reward >= 1.0


def summarise(
    episodes: Sequence[Episode],
    wall_seconds: float,
    group_of: Callable[[str], str] | None = None,
) -> EvalReport:
    n = max(1, len(episodes))
    groups: dict[str, list[Episode]] = {}
    for ep in episodes if group_of is not None else ():
        groups.setdefault(group_of(ep.task_id), []).append(ep)
    actions = max(1, sum(ep.policy_actions for ep in episodes))
    return EvalReport(
        episodes=len(episodes),
        success_rate=sum(success(ep) for ep in episodes) / n,
        avg_reward=sum(ep.reward for ep in episodes) / n,
        avg_turns=sum(ep.actions for ep in episodes) / n,
        invalid_rate=sum(ep.invalid for ep in episodes) / actions,
        malformed_rate=sum(ep.malformed for ep in episodes) / actions,
        generated_tokens=sum(ep.generated_tokens for ep in episodes),
        wall_seconds=wall_seconds,
        by_group={
            name: {
                "episodes": len(eps),
                "success_rate": sum(map(success, eps)) / len(eps),
                "avg_reward": sum(ep.reward for ep in eps) / len(eps),
            }
            for name, eps in sorted(groups.items())
        },
    )


def episode_record(ep: Episode) -> dict:
    return {
        "task_id": ep.task_id,
        "reward": ep.reward,
        "success": success(ep),
        "terminated": ep.terminated,
        "truncated": ep.truncated,
        "turns": ep.actions,
        "invalid": ep.invalid,
        "malformed": ep.malformed,
        "generated_tokens": ep.generated_tokens,
        "conversations": turns_to_json(ep.turns),
    }


def evaluate(
    handle: EnvHandle,
    policy: Policy,
    sampling: Sampling,
    *,
    max_episodes: int = 0,
    max_live: int = 32,
    out_dir: str | Path | None = None,
    progress: bool = True,
    shard: Shard | None = None,
) -> tuple[EvalReport, list[Episode]]:
    """Run every task of the handle's split (or the first `max_episodes`) once. With a
    `shard` of several ranks each runs its share of the tasks and every rank gets them all,
    in the split's order."""
    shard = shard or Shard()
    task_ids = handle.task_ids[:max_episodes] if max_episodes > 0 else handle.task_ids
    start = time.perf_counter()
    episodes = run_episodes(
        handle.make_env,
        [EpisodeSpec(t) for t in task_ids if shard.owns(t)],
        policy,
        sampling,
        handle.build_start,
        max_live=max_live,
        progress=progress,
        desc=f"eval {handle.split}",
    )
    if shard.world > 1:
        order = {t: i for i, t in enumerate(task_ids)}
        every = [ep for share in shard.gather(episodes) for ep in share]
        episodes = sorted(every, key=lambda ep: order[ep.task_id])
    report = summarise(episodes, time.perf_counter() - start, handle.group_of)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with (out / "transcripts.jsonl").open("w", encoding="utf-8") as f:
            for ep in episodes:
                f.write(json.dumps(episode_record(ep), ensure_ascii=False) + "\n")
        (out / "summary.json").write_text(json.dumps(asdict(report), indent=1) + "\n")
    return report, episodes
