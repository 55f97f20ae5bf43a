"""Run many episodes in lock-step: one batched policy call per turn across live episodes.

Plain Python over the env protocol and a `Policy` (no Lightning). Every live episode has
its own env instance from a pool; when one finishes, the next queued episode takes its slot,
so the batch stays full. An episode can start with *forced* assistant outputs (an expert
prefix for exploration and MC scoring): they are replayed in the real env, which produces
fresh observations; the policy acts from there on.

    episodes = run_episodes(lambda: ToyEnv(tasks), [EpisodeSpec("toy-0-1")], policy,
                            Sampling(), build_start=lambda env, obs: build_prompt(...))
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from ipr_lightning import stopping
from ipr_lightning.data.records import Dialogue, Turn
from ipr_lightning.envs.base import TextEnv
from ipr_lightning.rollout.policy import Policy, Sampling


@dataclass(frozen=True)
class EpisodeSpec:
    task_id: str
    forced: tuple[str, ...] = ()
    """Assistant outputs replayed (in the env) before the policy acts."""
    key: tuple[Any, ...] = ()
    """Caller's identity for the episode (e.g. iteration, task, prefix length, sample)."""


@dataclass
class Episode:
    task_id: str
    turns: list[Turn]
    """The whole conversation: prompt, then assistant outputs and observations."""
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    n_prompt: int = 0
    """Turns before the first action (instruction, OK, example, task)."""
    n_forced: int = 0
    invalid: int = 0
    """Actions the env rejected or could not parse (policy actions only)."""
    malformed: int = 0
    generated_tokens: int = 0
    key: tuple[Any, ...] = ()
    infos: list[dict[str, Any]] = field(default_factory=list)

    @property
    def dialogue(self) -> Dialogue:
        """The conversation split into its start and its (action, observation) steps."""
        return Dialogue.of(self.turns, self.n_prompt)

    @property
    def actions(self) -> int:
        return len(self.dialogue.steps)

    @property
    def policy_actions(self) -> int:
        return self.actions - self.n_forced


StartBuilder = Callable[[TextEnv, str], list[Turn]]


def turn_seed(base: int, spec: EpisodeSpec, turn: int) -> int:
    """The sampling seed of one turn of one episode: a function of the run's seed, the
    episode's identity (its key, else task and forced prefix) and the turn, and of nothing
    else, so a resumed or re-batched run samples exactly the same tokens."""
    ident = spec.key or (spec.task_id, spec.forced)
    digest = hashlib.blake2b(repr((base, ident, turn)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 2


class _Live:
    def __init__(self, env: TextEnv, spec: EpisodeSpec, build_start: StartBuilder) -> None:
        self.env, self.spec = env, spec
        obs, _ = env.reset(options={"task_id": spec.task_id})
        turns = build_start(env, obs)
        self.episode = Episode(spec.task_id, turns, n_prompt=len(turns), key=spec.key)
        self.done = False
        for output in spec.forced:
            self.apply(output, forced=True)
            if self.done:
                break

    def apply(self, output: str, forced: bool = False, tokens: int = 0) -> None:
        ep = self.episode
        ep.turns.append(Turn("assistant", output))
        obs, reward, terminated, truncated, info = self.env.step(output)
        ep.reward, ep.terminated, ep.truncated = reward, terminated, truncated
        ep.infos.append(info)
        if forced:
            ep.n_forced += 1
        else:
            ep.invalid += bool(info.get("invalid"))
            ep.malformed += bool(info.get("malformed"))
            ep.generated_tokens += tokens
        self.done = terminated or truncated
        if not self.done:
            ep.turns.append(Turn("user", self.env.format_observation(obs)))


def replay(env: TextEnv, spec: EpisodeSpec, build_start: StartBuilder) -> Episode:
    """Reset `env` to the spec's task and replay its forced outputs, no policy: the episode
    as far as they take it (done or not)."""
    return _Live(env, spec, build_start).episode


def run_episodes(
    make_env: Callable[[], TextEnv],
    specs: Sequence[EpisodeSpec],
    policy: Policy,
    sampling: Sampling,
    build_start: StartBuilder,
    *,
    max_live: int = 32,
    on_done: Callable[[Episode], None] | None = None,
    progress: bool = True,
    desc: str = "episodes",
) -> list[Episode]:
    """Play every spec to the end; returns episodes in the order of `specs`.

    `on_done` is called as each episode finishes (e.g. to append it to a store).
    """
    queue = list(enumerate(specs))[::-1]
    pool = [make_env() for _ in range(min(max_live, len(specs)))]
    live: list[tuple[int, _Live]] = []
    results: list[Episode | None] = [None] * len(specs)
    bar = tqdm(total=len(specs), desc=desc, disable=not progress, leave=False)
    actions = 0

    def finish(index: int, item: _Live) -> None:
        results[index] = item.episode
        pool.append(item.env)
        bar.update(1)
        if on_done is not None:
            on_done(item.episode)

    try:
        with stopping.stoppable():
            while queue or live:
                stopping.check()  # a SIGTERM: stop here, finished episodes already handed on
                while queue and pool:
                    index, spec = queue.pop()
                    item = _Live(pool.pop(), spec, build_start)
                    if item.done:  # the forced prefix already ended it
                        finish(index, item)
                    else:
                        live.append((index, item))
                if not live:
                    continue
                seeds = None
                if sampling.temperature > 0 and sampling.seed is not None:
                    seeds = [
                        turn_seed(sampling.seed, item.spec, item.episode.actions)
                        for _, item in live
                    ]
                gens = policy.act([item.episode.turns for _, item in live], sampling, seeds)
                actions += len(gens)
                bar.set_postfix(live=len(live), actions=actions)  # feedback between completions
                still = []
                for (index, item), gen in zip(live, gens, strict=True):
                    item.apply(gen.text, tokens=gen.tokens)
                    if item.done:
                        finish(index, item)
                    else:
                        still.append((index, item))
                live = still
    finally:  # connections, processes
        bar.close()
        for env in pool + [item.env for _, item in live]:
            env.close()
    return [r for r in results if r is not None]
