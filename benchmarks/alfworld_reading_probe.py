"""Does an ALFWorld policy read its observations? A teacher-forced probe.

On the expert trajectories of a held-out split, after each observation the expert writes
either "Thought: There is no <object> ..." (the target is not listed) or "Thought: There is a
<object> ..." (it is). The probe feeds each expert trajectory to the model and counts how
often the model's most likely next token after "There is" is the expert's; it prints that
accuracy beside the majority baseline (always the more common answer). A policy at the
baseline does not read whether the object is there. It also prints the share of expert
turns the model reproduces token for token.

    python benchmarks/alfworld_reading_probe.py --run bench/alfworld_cpu/seed_0/sft
    python benchmarks/alfworld_reading_probe.py --run <run> --split train --limit 50

Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ipr_lightning.config import load_config
from ipr_lightning.data.render import ensure_chat_template, render_conversation
from ipr_lightning.envs import build_env
from ipr_lightning.models import load_tokenizer

MARK = "Thought: There is"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="an ipr-fit run folder (config + adapter)")
    parser.add_argument("--split", default="valid_unseen")
    parser.add_argument("--limit", type=int, default=60, help="expert trajectories probed")
    args = parser.parse_args()
    run = Path(args.run)
    cfg = load_config(run / "config.yaml")
    tok = ensure_chat_template(load_tokenizer(cfg.model))
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(run / "adapter").eval()  # full fine-tuning
    experts = build_env(cfg.env, args.split).expert()[: args.limit]
    mark = tok(MARK, add_special_tokens=False)["input_ids"]
    right = total = no = turns_right = turns = 0
    for traj in experts:
        r = render_conversation(tok, traj.turns, 1 << 16)
        with torch.no_grad():
            pred = model(torch.tensor([r.input_ids])).logits[0].argmax(-1).tolist()
        ids, trained = r.input_ids, [i for i, label in enumerate(r.labels) if label != -100]
        spans = [[trained[0]]]
        for i in trained[1:]:
            spans[-1].append(i) if i == spans[-1][-1] + 1 else spans.append([i])
        for span in spans[1:]:  # the first is the "OK" to the instruction
            turns += 1
            turns_right += all(pred[i - 1] == ids[i] for i in span)
            start = span[0]
            if ids[start : start + len(mark)] == mark:
                at = start + len(mark)
                total += 1
                right += pred[at - 1] == ids[at]
                no += tok.decode(ids[at]).strip() == "no"
    base = max(no, total - no) / max(total, 1)
    print(f"{args.split}: {len(experts)} expert trajectories, {turns} assistant turns")
    print(f"  '{MARK} no/a' right   {right}/{total} = {right / max(total, 1):.3f}")
    print(f"  majority baseline        {base:.3f} ({no} of {total} are 'no')")
    print(f"  turns reproduced exactly {turns_right}/{turns} = {turns_right / max(turns, 1):.3f}")


if __name__ == "__main__":
    main()
