"""Rollout throughput: HF `generate` one episode at a time (naive), HF `generate` over all
live episodes per turn (hf-batched), and our lock-step decoding with keys/values reused
across turns (ours).

The same model, tasks and greedy settings go through every path, side by side in one run:

    python benchmarks/rollout_throughput.py                                # tiny model, CPU
    python benchmarks/rollout_throughput.py --model embedded:smollm2-135m-instruct --episodes 32
    python benchmarks/rollout_throughput.py --env alfworld --episodes 16   # generated games
    python benchmarks/rollout_throughput.py --workload mc --model embedded:smollm2-135m-instruct

`--workload mc` is MC step scoring instead of episodes: `--prefixes` real ALFWorld expert
prefixes (the embedded generated games; the longest that fit `--prefix-tokens`), each
sampled `--samples` times at T = 1 for `--max-new-tokens` tokens with no stop condition but
EOS: HF `generate` on all rows in one call (hf-batched) against ours (each prefix prefilled
once, its keys/values shared by its samples) and, with `--vllm` (in a virtual environment
with vLLM: see the README), vLLM with prefix caching, its engine start timed separately.

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
from ipr_lightning.data.records import Turn
from ipr_lightning.data.render import ensure_chat_template
from ipr_lightning.envs import build_env
from ipr_lightning.models import load_model, load_tokenizer
from ipr_lightning.rollout.engine import Episode, EpisodeSpec, run_episodes
from ipr_lightning.rollout.policy import HFPolicy, Sampling, encode_prompts


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-random")
    p.add_argument("--dtype", default=None, help="default: bfloat16 on GPU, float32 on CPU")
    p.add_argument("--env", default="toy", choices=("toy", "alfworld"))
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--max-turns", type=int, default=6)
    p.add_argument("--max-new-tokens", type=int, default=None, help="32 (episodes), 48 (mc)")
    p.add_argument("--repeat", type=int, default=1, help="timed runs per path (best is shown)")
    p.add_argument("--skip-naive", action="store_true", help="slow on long episodes")
    p.add_argument("--workload", default="episodes", choices=("episodes", "mc"))
    p.add_argument("--prefixes", type=int, default=8, help="mc: expert prefixes")
    p.add_argument("--samples", type=int, default=5, help="mc: samples per prefix (N)")
    p.add_argument("--prefix-tokens", type=int, default=900, help="mc: longest prefix")
    p.add_argument("--vllm", action="store_true", help="mc: add the vLLM path")
    return p.parse_args()


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU ({torch.get_num_threads()} threads)"


def timed(fn) -> tuple[float, list[Episode]]:  # noqa: ANN001
    start = time.perf_counter()
    episodes = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, episodes


def main() -> None:
    args = parse_args()
    if args.max_new_tokens is None:
        args.max_new_tokens = 48 if args.workload == "mc" else 32
    cuda = torch.cuda.is_available()
    dtype = args.dtype or ("bfloat16" if cuda else "float32")
    cfg = ModelConfig(name_or_path=args.model, dtype=dtype)
    cfg = replace(cfg, lora=replace(cfg.lora, enabled=False))
    tokenizer = ensure_chat_template(load_tokenizer(cfg))
    model = load_model(cfg).eval()
    if cuda:
        model = model.cuda()
    if args.workload == "mc":
        return mc_workload(args, model, tokenizer, f"{args.model} ({dtype})")
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
    device = device_name()
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


def expert_prefixes(tokenizer, n: int, max_tokens: int) -> list[tuple[list[Turn], int]]:  # noqa: ANN001
    """`n` (history, prompt tokens) ending at an observation, cut from ALFWorld expert
    trajectories: the longest of each that renders to at most `max_tokens`, one per
    trajectory."""
    cfg = EnvConfig(
        name="alfworld", options={"n_train": 4 * n, "n_valid_seen": 1, "n_valid_unseen": 1}
    )
    handle = build_env(cfg, "train")  # games are generated once, then cached
    prefixes = []
    for trajectory in handle.expert():
        turns = trajectory.turns
        cuts = [turns[:j] for j in range(3, len(turns)) if turns[j - 1].role == "user"]
        fitting = [
            (cut, len(ids))
            for cut, ids in zip(cuts, encode_prompts(tokenizer, cuts), strict=True)
            if len(ids) <= max_tokens
        ]
        if fitting:
            prefixes.append(fitting[-1])
        if len(prefixes) == n:
            break
    return prefixes


def mc_workload(args: argparse.Namespace, model, tokenizer, name: str) -> None:  # noqa: ANN001
    prefixes = expert_prefixes(tokenizer, args.prefixes, args.prefix_tokens)
    histories = [h for h, _ in prefixes for _ in range(args.samples)]
    seeds = list(range(len(histories)))
    sampling = Sampling(temperature=1.0, max_new_tokens=args.max_new_tokens, action_end=None)
    lengths = [n for _, n in prefixes]
    policies = {
        "hf-batched": lambda: HFPolicy(model, tokenizer, batch_size=len(histories), reuse_kv=False),
        "ours": lambda: HFPolicy(model, tokenizer, batch_size=len(histories)),
    }
    HFPolicy(model, tokenizer, batch_size=2).act(histories[:2], replace(sampling, max_new_tokens=2))
    results = {}
    for path, make in policies.items():
        runs = []
        for _ in range(args.repeat):
            policy = make()  # a fresh cache: nothing carried over between runs
            runs.append(timed(lambda p=policy: p.act(histories, sampling, seeds)))
        results[path] = min(runs, key=lambda r: r[0])
    start_seconds = None
    if args.vllm:  # last: the engine binds this process's threads once started
        from ipr_lightning.config import RolloutConfig
        from ipr_lightning.models import resolve_model_path
        from ipr_lightning.rollout.vllm_policy import VLLMEngine

        cfg = ModelConfig(name_or_path=args.model, dtype=name.split("(")[1].rstrip(")"))
        engine = VLLMEngine(resolve_model_path(cfg), RolloutConfig(backend="vllm"), cfg)
        start = time.perf_counter()
        engine.llm  # noqa: B018 - start the engine: timed on its own
        start_seconds = time.perf_counter() - start
        runs = [timed(lambda: engine.policy(tokenizer).act(histories, sampling, seeds))]
        runs += [timed(lambda: engine.policy(tokenizer).act(histories, sampling, seeds))]
        results["vllm"] = runs[0]
        results["vllm (warm)"] = runs[1]  # its prefix cache holds the prompts now
    device = device_name()
    print(
        f"model {name}, MC workload: {len(prefixes)} expert prefixes of {min(lengths)}-"
        f"{max(lengths)} tokens x {args.samples} samples, T = 1, {args.max_new_tokens} new "
        f"tokens, {device}, CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    print(f"{'path':12}{'seconds':>10}{'tokens':>9}{'tokens/s':>12}")
    rate = {}
    for path, (seconds, gens) in results.items():
        tokens = sum(g.tokens for g in gens)
        rate[path] = tokens / seconds
        print(f"{path:12}{seconds:>10.2f}{tokens:>9}{rate[path]:>12.1f}")
    print(f"ratio ours/hf-batched: {rate['ours'] / rate['hf-batched']:.2f}x tokens/s")
    if start_seconds is not None:
        seconds = results["vllm"][0]  # the first run: prompts not yet in its prefix cache
        print(
            f"ratio vllm/ours: {rate['vllm'] / rate['ours']:.2f}x tokens/s; vLLM engine start "
            f"{start_seconds:.1f} s: end to end (start included) vLLM takes "
            f"{start_seconds + seconds:.1f} s, ours {results['ours'][0]:.1f} s; at these rates "
            f"vLLM breaks even after {crossover(start_seconds, rate['vllm'], rate['ours'])}"
        )


def crossover(start_seconds: float, fast: float, slow: float) -> str:
    """Generated tokens after which an engine that costs `start_seconds` to start and makes
    `fast` tokens/s beats one that makes `slow` tokens/s at once."""
    if fast <= slow:
        return "never (it is not faster)"
    return f"{start_seconds / (1 / slow - 1 / fast):.0f} generated tokens"


if __name__ == "__main__":
    main()
