"""Rollout throughput: HF `generate` one episode at a time (naive), HF `generate` over all
live episodes per turn (hf-batched), and our lock-step decoding with keys/values reused
across turns (ours).

The same model, tasks and greedy settings go through every path, side by side in one run:

    python benchmarks/rollout_throughput.py                                # tiny model, CPU
    python benchmarks/rollout_throughput.py --model embedded:smollm2-135m-instruct --episodes 32
    python benchmarks/rollout_throughput.py --env alfworld --episodes 16   # generated games

Prints episodes/s and generated tokens/s of each path, the ratios to ours, the prompt tokens
ours prefilled per action, and whether the paths produced the same episodes (greedy decoding:
they should, up to rare argmax ties under different padding). Uses the GPU when there is one.
Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from ipr_lightning.config import EnvConfig, ModelConfig
from ipr_lightning.data.render import ensure_chat_template
from ipr_lightning.envs.build import build_env
from ipr_lightning.models import load_model, load_tokenizer
from ipr_lightning.rollout.engine import Episode, EpisodeSpec, run_episodes
from ipr_lightning.rollout.policy import HFPolicy, Sampling


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-random")
    p.add_argument("--dtype", default=None, help="default: bfloat16 on GPU, float32 on CPU")
    p.add_argument("--env", default="toy", choices=("toy", "alfworld"))
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--max-turns", type=int, default=6)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--repeat", type=int, default=1, help="timed runs per path (best is shown)")
    p.add_argument("--skip-naive", action="store_true", help="slow on long episodes")
    return p.parse_args()


def timed(fn) -> tuple[float, list[Episode]]:  # noqa: ANN001
    start = time.perf_counter()
    episodes = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, episodes


def main() -> None:
    args = parse_args()
    cuda = torch.cuda.is_available()
    dtype = args.dtype or ("bfloat16" if cuda else "float32")
    cfg = ModelConfig(name_or_path=args.model, dtype=dtype)
    cfg = replace(cfg, lora=replace(cfg.lora, enabled=False))
    tokenizer = ensure_chat_template(load_tokenizer(cfg))
    model = load_model(cfg).eval()
    if cuda:
        model = model.cuda()
    env_cfg = EnvConfig(name=args.env, max_turns=args.max_turns)  # alfworld: the default set
    if args.env == "toy":
        env_cfg.n_valid_unseen = args.episodes
    handle = build_env(env_cfg, "valid_unseen")
    specs = [EpisodeSpec(t) for t in handle.task_ids[: args.episodes]]
    sampling = Sampling(max_new_tokens=args.max_new_tokens, action_end=handle.action_end)

    def lockstep(policy: HFPolicy, subset: list[EpisodeSpec], live: int) -> list[Episode]:
        return run_episodes(
            handle.make_env,
            subset,
            policy,
            sampling,
            handle.build_start,
            max_live=live,
            progress=False,
        )

    def naive() -> list[Episode]:  # one episode at a time, one HF generate per turn
        policy = HFPolicy(model, tokenizer, batch_size=1, reuse_kv=False)
        return [lockstep(policy, [s], 1)[0] for s in specs]

    def hf_batched() -> list[Episode]:  # every live episode in one HF generate per turn
        return lockstep(HFPolicy(model, tokenizer, len(specs), reuse_kv=False), specs, len(specs))

    policies = []

    def ours() -> list[Episode]:  # lock-step, keys/values reused across turns
        policies.append(HFPolicy(model, tokenizer, batch_size=len(specs)))
        return lockstep(policies[-1], specs, len(specs))

    timed(lambda: hf_batched()[:1])  # warm-up (kernels, caches)
    paths = {"naive": naive, "hf-batched": hf_batched, "ours": ours}
    if args.skip_naive:
        del paths["naive"]
    results = {}
    for name, fn in paths.items():
        runs = [timed(fn) for _ in range(args.repeat)]
        results[name] = min(runs, key=lambda r: r[0])
    device = torch.cuda.get_device_name() if cuda else f"CPU ({torch.get_num_threads()} threads)"
    print(
        f"model {args.model} ({dtype}), env {args.env}, {len(specs)} episodes x "
        f"{args.max_turns} turns max, {args.max_new_tokens} new tokens max, {device}"
    )
    print(f"{'path':12}{'seconds':>10}{'episodes/s':>12}{'tokens/s':>12}{'actions':>9}")
    rate = {}
    for name, (seconds, episodes) in results.items():
        tokens = sum(ep.generated_tokens for ep in episodes)
        actions = sum(ep.policy_actions for ep in episodes)
        rate[name] = tokens / seconds
        print(
            f"{name:12}{seconds:>10.2f}{len(episodes) / seconds:>12.3f}{rate[name]:>12.1f}"
            f"{actions:>9}"
        )
    cache = policies[-1].cache
    actions = sum(ep.policy_actions for ep in results["ours"][1])
    print(
        f"ours: {cache.prefilled_tokens / actions:.0f} prompt tokens prefilled per action, "
        f"{cache.reused_tokens / actions:.0f} reused from the cache"
    )
    for name in results:
        if name != "ours":
            same = [ep.turns for ep in results[name][1]] == [ep.turns for ep in results["ours"][1]]
            print(
                f"ratio ours/{name}: {rate['ours'] / rate[name]:.2f}x tokens/s; "
                f"identical episodes: {same}"
            )


if __name__ == "__main__":
    main()
