"""How well does a learned step-value model stand in for MC? An offline probe on a finished run.

Takes the labels `ipr.step_values=model` would train on when iteration `--before` starts
(every action the run valued by MC in earlier iterations, read from its `rollouts.jsonl`),
trains the value model (`ipr_lightning.ipr.value_model`) from the run's frozen SFT policy on
the tasks that are not held out, and prints for each setting, on the held-out tasks (1 in 5):
the mean squared error against the MC values, that of a constant predictor (the training
labels' mean), and how often the model's values give MC's step-pair decision on the
comparisons whose rewards allow a pair. Settings side by side: `--lr` and `--epochs` take
several values.

    python benchmarks/value_model_probe.py --run bench/fixed/seed_1/ipr --before 2
    python benchmarks/value_model_probe.py --run <run> --before 3 --lr 1e-3 3e-3 --epochs 4 8

The run needs its frozen SFT policy: `frozen_sft/` (full fine-tuning) or `adapter_sft/`
(LoRA). Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def sft_policy(run: Path, cfg):  # noqa: ANN001, ANN201
    """(policy model, frozen SFT copy or None) as the IPR loop holds them after SFT."""
    from transformers import AutoModelForCausalLM

    from ipr_lightning.models import POLICY, add_reference_adapter, load_adapter_weights, load_model

    if (run / "frozen_sft" / "config.json").is_file():  # full fine-tuning
        sft = AutoModelForCausalLM.from_pretrained(run / "frozen_sft").eval()
        return sft, sft.requires_grad_(False)
    model = load_model(cfg.model)
    load_adapter_weights(model, run / "adapter_sft", POLICY)
    add_reference_adapter(model, POLICY, "sft")
    return model, None


def main() -> None:
    from ipr_lightning.config import load_config
    from ipr_lightning.data.render import ensure_chat_template
    from ipr_lightning.ipr.pairs import PairRules
    from ipr_lightning.ipr.store import RolloutStore
    from ipr_lightning.ipr.value_model import StepValueModel, fit_and_check, split_labels
    from ipr_lightning.ipr.values import LabelSet, comparisons
    from ipr_lightning.models import load_tokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="an ipr-fit run folder")
    parser.add_argument("--before", type=int, default=2, help="labels of iterations < this")
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-3])
    parser.add_argument("--epochs", type=int, nargs="+", default=[4])
    args = parser.parse_args()
    run = Path(args.run)
    cfg = load_config(run / "config.yaml")
    vm = cfg.ipr.value_model
    tokenizer = ensure_chat_template(load_tokenizer(cfg.model))
    store = RolloutStore(run / "rollouts.jsonl")
    examples = LabelSet.of_store(store, args.before).examples(store)
    train, test = split_labels(examples)
    rewards = {}
    for k in range(1, args.before):
        path = run / f"iter_{k}" / "step_values.jsonl"
        for line in path.read_text().splitlines() if path.is_file() else []:
            row = json.loads(line)
            rewards[(k, row["task"], row["j"])] = (row["expert_reward"], row["agent_reward"])
    rules = PairRules(cfg.ipr.tau_traj, cfg.ipr.step_tau(cfg.env.name), cfg.ipr.agent_wins)
    print(
        f"{run}: labels of iterations < {args.before}: {len(train)} training actions, "
        f"{len(test)} held out ({len(comparisons(test, rewards))} held-out comparisons); "
        f"tau_step {rules.tau_step}"
    )
    print(f"  {'lr':>8}{'epochs':>8}{'train MSE':>11}{'held-out MSE':>14}{'constant':>10}"
          f"{'decisions as MC':>17}{'pairs':>7}{'fit s':>8}")  # fmt: skip
    for lr in args.lr:
        for epochs in args.epochs:
            policy, sft_copy = sft_policy(run, cfg)
            seed = cfg.seed + args.before  # the seed the run's iteration `--before` uses
            model = StepValueModel.build(
                policy, sft_copy, cfg.model.lora, tokenizer, vm.max_length, seed
            )
            m = fit_and_check(
                model, examples, rewards, rules, epochs, lr, vm.batch_size, seed, False
            )
            model.close()
            agree = m.get("values/heldout_decision_agreement")
            print(
                f"  {lr:>8g}{epochs:>8}{m['values/train_mse']:>11.4f}"
                f"{m.get('values/heldout_mse', float('nan')):>14.4f}"
                f"{m.get('values/heldout_mse_constant', float('nan')):>10.4f}"
                f"{'-' if agree is None else f'{agree:.3f}':>17}"
                f"{m.get('values/heldout_comparisons', 0):>7}"
                f"{m['values/fit_seconds']:>8.1f}"
            )


if __name__ == "__main__":
    main()
