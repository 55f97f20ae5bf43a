"""Tests of ipr_lightning.losses: sequence log-probs, NLL, DPO and the IPR objective."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ipr_lightning import losses
from ipr_lightning.losses import dpo_loss, ipr_objective, nll_loss, sequence_logps

LOG2 = math.log(2.0)


def reference_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Straightforward [B] sum of log p(label): full float32 log_softmax, gather, mask."""
    logp = logits[:, :-1].float().log_softmax(-1)
    targets = labels[:, 1:]
    mask = targets != -100
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1)


def random_batch(dtype: torch.dtype = torch.float32, seed: int = 0):
    """B=3, T=7, V=11 logits (leaf, requires grad) and labels with masked prompt / padding."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 7, 11, generator=g).to(dtype).requires_grad_()
    labels = torch.randint(0, 11, (3, 7), generator=g)
    labels[0, :2] = -100  # prompt
    labels[1, 5:] = -100  # right padding
    labels[2, ::2] = -100  # scattered holes
    return logits, labels


def hand_example() -> tuple[torch.Tensor, torch.Tensor]:
    """B=2, T=4, V=3.

    Row 0, labels [-100, 2, 0, -100]:
      logits[0, 0] = log([1, 1, 2]) -> p = [1/4, 1/4, 1/2]; predicts labels[0, 1] = 2: log(1/2)
      logits[0, 1] = [0, 0, 0]      -> p = 1/3 each;        predicts labels[0, 2] = 0: log(1/3)
      logits[0, 2] predicts labels[0, 3] = -100 (masked), logits[0, 3] predicts nothing:
      both are set to extreme values that would show up if the shift or mask were wrong.
      sum = log(1/2) + log(1/3) = -log 6; mean over its 2 tokens = -log(6) / 2.
    Row 1, labels [1, -100, -100, -100]: labels[:, 0] is never predicted (no logit before
      it), so the row has no scored token: sum = mean = 0.
    """
    logits = torch.zeros(2, 4, 3)
    logits[0, 0] = torch.log(torch.tensor([1.0, 1.0, 2.0]))
    logits[0, 2] = torch.tensor([50.0, -50.0, 0.0])
    logits[0, 3] = torch.tensor([-50.0, 0.0, 50.0])
    logits[1] = torch.arange(12.0).reshape(4, 3)
    labels = torch.tensor([[-100, 2, 0, -100], [1, -100, -100, -100]])
    return logits, labels


def test_sequence_logps_hand_example_and_empty_rows():
    logits, labels = hand_example()
    out = sequence_logps(logits, labels)
    assert out.shape == (2,) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([-math.log(6.0), 0.0]), atol=1e-6, rtol=0)
    mean = sequence_logps(logits, labels, average=True)  # empty row: 0, not 0 / 0 = NaN
    torch.testing.assert_close(mean, torch.tensor([-math.log(6.0) / 2, 0.0]), atol=1e-6, rtol=0)
    # fully masked batch: zeros, and a zero (not NaN) gradient
    logits = torch.randn(2, 5, 4, requires_grad=True)
    for average in (False, True):
        out = sequence_logps(logits, torch.full((2, 5), -100), average=average)
        assert torch.equal(out, torch.zeros(2))
    out.sum().backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_sequence_logps_matches_reference_float32_with_grads():
    logits, labels = random_batch()
    out = sequence_logps(logits, labels)
    (grad,) = torch.autograd.grad((out * torch.tensor([1.0, -2.0, 0.5])).sum(), logits)
    ref = reference_logps(logits, labels)
    (ref_grad,) = torch.autograd.grad((ref * torch.tensor([1.0, -2.0, 0.5])).sum(), logits)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(grad, ref_grad, atol=1e-6, rtol=1e-5)
    assert grad.abs().sum() > 0
    counts = (labels[:, 1:] != -100).sum(-1)
    torch.testing.assert_close(sequence_logps(logits, labels, average=True), ref / counts)


def test_sequence_logps_bf16_matches_reference_on_upcast_values():
    logits, labels = random_batch(torch.bfloat16, seed=2)
    out = sequence_logps(logits, labels)
    assert out.dtype == torch.float32
    (grad,) = torch.autograd.grad(out.sum(), logits)
    ref = reference_logps(logits, labels)  # .float() of the same bf16 values
    (ref_grad,) = torch.autograd.grad(ref.sum(), logits)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    assert grad.dtype == torch.bfloat16
    torch.testing.assert_close(grad.float(), ref_grad.float(), atol=1e-2, rtol=1e-2)


def test_sequence_logps_chunk_boundaries_and_gradcheck(monkeypatch):
    """Chunks of 5 rows over N = 12 unmasked positions (not a multiple) give the same result."""
    logits, labels = random_batch(seed=3)
    full = sequence_logps(logits, labels)
    (full_grad,) = torch.autograd.grad(full.sum(), logits)
    monkeypatch.setattr(losses, "_CHUNK_ROWS", 5)
    chunked = sequence_logps(logits, labels)
    (chunked_grad,) = torch.autograd.grad(chunked.sum(), logits)
    assert (labels[:, 1:] != -100).sum() == 12
    torch.testing.assert_close(chunked, full)
    torch.testing.assert_close(chunked_grad, full_grad)
    # custom backward vs finite differences, in float64, over two chunks (N = 7)
    logits = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[-100, 1, 3, 0, -100], [2, 2, -100, 1, 0]])
    assert torch.autograd.gradcheck(lambda x: sequence_logps(x, labels, average=True), (logits,))


def test_sequence_logps_saves_no_float32_vocab_sized_tensor():
    """For bf16 logits, nothing float32 with a vocabulary axis is kept for backward."""
    logits, labels = random_batch(torch.bfloat16, seed=4)
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        sequence_logps(logits, labels)
    assert saved, "expected something to be saved for backward"
    big_fp32 = [tuple(t.shape) for t in saved if t.dtype == torch.float32 and t.shape[-1:] == (11,)]
    assert big_fp32 == []


def test_sequence_logps_padding_invariance():
    """Right padding (extra -100 positions) and left padding (sequence shifted right behind
    -100 positions) leave the log-prob unchanged. The base sequence starts with a masked
    prompt token, as in real data: its labels[0] is never scored anyway."""
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(1, 6, 9, generator=g)
    labels = torch.tensor([[-100, -100, 4, 0, 8, 3]])
    base = sequence_logps(logits, labels)
    pad_logits = torch.randn(1, 3, 9, generator=g) * 5
    pad_labels = torch.full((1, 3), -100)
    right = sequence_logps(torch.cat([logits, pad_logits], 1), torch.cat([labels, pad_labels], 1))
    left = sequence_logps(torch.cat([pad_logits, logits], 1), torch.cat([pad_labels, labels], 1))
    torch.testing.assert_close(right, base, atol=1e-6, rtol=0)
    torch.testing.assert_close(left, base, atol=1e-6, rtol=0)


def test_sequence_logps_rejects_bad_shapes_and_label_values():
    with pytest.raises(ValueError, match="logits"):
        sequence_logps(torch.randn(2, 5), torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        sequence_logps(torch.randn(2, 5, 3), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="-100"):
        sequence_logps(torch.randn(1, 3, 3), torch.tensor([[0, 3, 1]]))
    with pytest.raises(ValueError, match="-100"):
        sequence_logps(torch.randn(1, 3, 3), torch.tensor([[0, -1, 1]]))


def test_nll_loss_equals_cross_entropy():
    logits, labels = random_batch(seed=6)
    out = nll_loss(logits, labels)
    expected = F.cross_entropy(
        logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    (grad,) = torch.autograd.grad(out, logits)
    (ref_grad,) = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(grad, ref_grad, atol=1e-7, rtol=1e-5)
    # hand example: -(log 1/2 + log 1/3) / 2 tokens = log(6) / 2
    torch.testing.assert_close(nll_loss(*hand_example()), torch.tensor(math.log(6.0) / 2))


def test_nll_loss_raises_without_unmasked_tokens():
    with pytest.raises(ValueError, match="-100"):
        nll_loss(torch.randn(2, 4, 3), torch.full((2, 4), -100))
    # only labels[:, 0] unmasked: nothing left after the causal shift
    with pytest.raises(ValueError, match="-100"):
        nll_loss(torch.randn(1, 3, 3), torch.tensor([[1, -100, -100]]))


def random_logps(seed: int, n: int = 6, requires_grad: bool = False) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [(-20 * torch.rand(n, generator=g)).requires_grad_(requires_grad) for _ in range(4)]


def test_dpo_loss_matches_formula_and_rewards():
    pc, pr, rc, rr = random_logps(7, requires_grad=True)
    beta = 0.3
    losses_, chosen_r, rejected_r = dpo_loss(pc, pr, rc, rr, beta)
    z = beta * ((pc - rc) - (pr - rr))
    torch.testing.assert_close(losses_, -F.logsigmoid(z), atol=1e-6, rtol=0)
    torch.testing.assert_close(chosen_r, beta * (pc - rc).detach())
    torch.testing.assert_close(rejected_r, beta * (pr - rr).detach())
    assert losses_.grad_fn is not None and losses_.requires_grad
    for r in (chosen_r, rejected_r):
        assert r.grad_fn is None and not r.requires_grad
    losses_.sum().backward()
    assert pc.grad is not None and pr.grad is not None
    assert rc.grad is None and rr.grad is None  # the reference is frozen
    with pytest.raises(ValueError, match="shape"):
        dpo_loss(pc, pr, rc, rr[:-1], beta)
    with pytest.raises(ValueError, match="shape"):
        dpo_loss(pc[:, None], pr[:, None], rc[:, None], rr[:, None], beta)


def test_dpo_loss_zero_margin_or_zero_beta_is_log2():
    """Equal log-ratios (pc - rc = pr - rr = -2) -> z = 0 -> -logsigmoid(0) = log 2, both
    rewards beta * -2; and beta -> 0 gives z -> 0, so log 2 whatever the log-probs."""
    x = torch.tensor([-3.0, -7.5])
    losses_, chosen_r, rejected_r = dpo_loss(x, x - 1, x + 2, x + 1, beta=0.7)
    torch.testing.assert_close(losses_, torch.full((2,), LOG2))
    torch.testing.assert_close(chosen_r, torch.full((2,), -1.4))
    torch.testing.assert_close(rejected_r, torch.full((2,), -1.4))
    pc, pr, rc, rr = random_logps(10)
    for beta in (0.0, 1e-9):
        out = dpo_loss(pc, pr, rc, rr, beta)[0]
        torch.testing.assert_close(out, torch.full((6,), LOG2), atol=1e-6, rtol=0)


def test_dpo_loss_swap_chosen_rejected():
    pc, pr, rc, rr = random_logps(9)
    beta = 0.2
    _, chosen_r, rejected_r = dpo_loss(pc, pr, rc, rr, beta)
    swapped, s_chosen_r, s_rejected_r = dpo_loss(pr, pc, rr, rc, beta)
    z = beta * ((pc - rc) - (pr - rr))
    torch.testing.assert_close(swapped, -F.logsigmoid(-z), atol=1e-6, rtol=0)
    torch.testing.assert_close(s_chosen_r - s_rejected_r, -(chosen_r - rejected_r))


def test_dpo_loss_label_smoothing_hand_case():
    """(pc - rc) - (pr - rr) = 1 and beta = log 3: sigmoid(z) = 3/4, sigmoid(-z) = 1/4.
    With ls = 0.25: loss = -(0.75) log(3/4) - 0.25 log(1/4) = 0.75 log(4/3) + 0.25 log 4."""
    one = torch.tensor([1.0])
    zero = torch.tensor([0.0])
    out, _, _ = dpo_loss(one, zero, zero, zero, beta=math.log(3.0), label_smoothing=0.25)
    expected = 0.75 * math.log(4 / 3) + 0.25 * math.log(4.0)
    torch.testing.assert_close(out, torch.tensor([expected]))
    plain, _, _ = dpo_loss(one, zero, zero, zero, beta=math.log(3.0))
    torch.testing.assert_close(plain, torch.tensor([math.log(4 / 3)]))


def trl_sigmoid_dpo(pc, pr, rc, rr, beta, label_smoothing):
    """TRL DPOTrainer's `sigmoid` loss, written out independently (trl is not a dependency)."""
    logits = (pc - pr) - (rc - rr)  # pi_logratios - ref_logratios
    out = (
        -F.logsigmoid(beta * logits) * (1 - label_smoothing)
        - F.logsigmoid(-beta * logits) * label_smoothing
    )
    return out, beta * (pc - rc).detach(), beta * (pr - rr).detach()


@pytest.mark.parametrize(("beta", "ls"), [(0.1, 0.0), (0.5, 0.1), (2.0, 0.3)])
def test_dpo_loss_matches_trl(beta, ls):
    pc, pr, rc, rr = random_logps(11)
    for ours, theirs in zip(
        dpo_loss(pc, pr, rc, rr, beta, ls), trl_sigmoid_dpo(pc, pr, rc, rr, beta, ls), strict=True
    ):
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)


def hand_pairs(requires_grad: bool = False):
    """Two pairs: 0 = outcome, 1 = step; beta = log(3) / 2.

    Pair 0: pc = -2, pr = -3, rc = -2, rr = -3 -> z = 0 -> d_0 = log 2.
    Pair 1: pc = -1, rc = -2 (ratio +1); pr = -4, rr = -3 (ratio -1) -> z = beta * 2 = log 3
            -> d_1 = -log sigmoid(log 3) = -log(3/4) = log(4/3).
    """
    values = ([-2.0, -1.0], [-3.0, -4.0], [-2.0, -2.0], [-3.0, -3.0])
    pc, pr, rc, rr = (torch.tensor(v, requires_grad=requires_grad) for v in values)
    return pc, pr, rc, rr, torch.tensor([False, True]), math.log(3.0) / 2


def test_ipr_hand_computed_total_and_gradients():
    """B = 2, w_sft = 0.5, w_outcome = 2, w_step = 3, nll "all_chosen"/"sum":
    outcome_dpo = log 2 / 2, step_dpo = log(4/3) / 2, nll = (2 + 1) / 2 = 1.5,
    total = 0.5 * 1.5 + 2 * log 2 / 2 + 3 * log(4/3) / 2.
    d total / d pc_i = -w_sft / B - w_type * beta * sigmoid(-z_i) / B:
    pair 0 (z = 0): -0.25 - 2 * beta * 0.5 / 2;
    pair 1 (sigmoid(-log 3) = 1/4): -0.25 - 3 * beta / 8.
    """
    pc, pr, rc, rr, is_step, beta = hand_pairs(requires_grad=True)
    out = ipr_objective(pc, pr, rc, rr, is_step, beta=beta, w_sft=0.5, w_outcome=2, w_step=3)
    torch.testing.assert_close(out.outcome_dpo, torch.tensor(LOG2 / 2))
    torch.testing.assert_close(out.step_dpo, torch.tensor(math.log(4 / 3) / 2))
    torch.testing.assert_close(out.nll, torch.tensor(1.5))
    expected = 0.75 + LOG2 + 1.5 * math.log(4 / 3)
    torch.testing.assert_close(out.loss, torch.tensor(expected))
    torch.testing.assert_close(out.chosen_rewards, torch.tensor([0.0, beta]))
    torch.testing.assert_close(out.rejected_rewards, torch.tensor([0.0, -beta]))
    assert out.loss.shape == ()
    out.loss.backward()
    torch.testing.assert_close(pc.grad, torch.tensor([-0.25 - beta / 2, -0.25 - 3 * beta / 8]))
    assert pr.grad is not None and torch.all(pr.grad > 0)
    assert rc.grad is None and rr.grad is None


@pytest.mark.parametrize("ls", [0.0, 0.2])
def test_ipr_dpo_split_sums_to_batch_mean(ls):
    pc, pr, rc, rr = random_logps(12, n=8)
    is_step = torch.tensor([False, True, True, False, True, False, False, True])
    out = ipr_objective(pc, pr, rc, rr, is_step, beta=0.4, label_smoothing=ls, w_sft=0.0)
    d, _, _ = dpo_loss(pc, pr, rc, rr, 0.4, ls)
    torch.testing.assert_close(out.outcome_dpo + out.step_dpo, d.mean())
    torch.testing.assert_close(out.outcome_dpo, d[~is_step].sum() / 8)
    torch.testing.assert_close(out.step_dpo, d[is_step].sum() / 8)
    torch.testing.assert_close(out.loss, d.mean())


def test_ipr_outcome_only_batch_has_zero_step_term():
    pc, pr, rc, rr = random_logps(13, n=4)
    out = ipr_objective(pc, pr, rc, rr, torch.zeros(4, dtype=torch.bool), beta=0.1)
    assert out.step_dpo.item() == 0.0
    torch.testing.assert_close(out.outcome_dpo, dpo_loss(pc, pr, rc, rr, 0.1)[0].mean())
    torch.testing.assert_close(out.loss, out.nll + out.outcome_dpo)


def test_ipr_zero_sft_weight_drops_nan_nll():
    """w_sft = 0 with nll "mean" and a zero token count (0 / 0 = NaN in the NLL term):
    the total is exactly the weighted DPO terms, finite, with finite gradients."""
    pc, pr, rc, rr, is_step, beta = hand_pairs(requires_grad=True)
    pc_zero = torch.stack([pc[0], pc[1] * 0])  # pair 1: log p = 0 over 0 tokens
    counts = torch.tensor([3, 0])
    out = ipr_objective(
        pc_zero, pr, rc, rr, is_step, beta=beta, w_sft=0.0, w_outcome=2.0, w_step=0.5,
        chosen_token_counts=counts, nll_reduction="mean",
    )  # fmt: skip
    assert not torch.isfinite(out.nll)  # reported for monitoring, but not in the loss
    assert torch.isfinite(out.loss)
    torch.testing.assert_close(out.loss, 2.0 * out.outcome_dpo + 0.5 * out.step_dpo)
    out.loss.backward()
    assert torch.isfinite(pc.grad).all() and torch.isfinite(pr.grad).all()


def test_ipr_zero_dpo_weights_drop_their_terms():
    """A NaN only in a step pair must not reach loss or gradients when w_step = 0."""
    pc, pr, rc, rr, is_step, beta = hand_pairs()
    pr_nan = torch.tensor([-3.0, float("nan")], requires_grad=True)
    out = ipr_objective(pc, pr_nan, rc, rr, is_step, beta=beta, w_step=0.0)
    assert torch.isnan(out.step_dpo)
    torch.testing.assert_close(out.loss, out.nll + out.outcome_dpo)
    torch.testing.assert_close(out.loss, torch.tensor(1.5 + LOG2 / 2))
    out.loss.backward()
    torch.testing.assert_close(pr_nan.grad, torch.tensor([beta * 0.5 / 2, 0.0]))
    out = ipr_objective(pc, pr, rc, rr, is_step, beta=beta, w_outcome=0.0, w_step=2.0)
    torch.testing.assert_close(out.loss, out.nll + 2.0 * out.step_dpo)


def test_ipr_nll_on_outcome_chosen_counts_only_outcome_pairs():
    """Pairs: outcome pc = -2, step pc = -1 -> outcome_chosen nll = 2 / B = 1 (not 1.5)."""
    pc, pr, rc, rr, is_step, beta = hand_pairs()
    out = ipr_objective(pc, pr, rc, rr, is_step, beta=beta, nll_on="outcome_chosen")
    torch.testing.assert_close(out.nll, torch.tensor(1.0))
    # a NaN in the step pair's chosen log-prob does not touch the outcome-only NLL
    out_nan = ipr_objective(
        torch.tensor([-2.0, float("nan")]), pr, rc, rr, is_step, beta=beta, w_step=0.0,
        nll_on="outcome_chosen",
    )  # fmt: skip
    torch.testing.assert_close(out_nan.nll, torch.tensor(1.0))
    assert torch.isfinite(out_nan.loss)


def test_ipr_nll_reduction_mean_divides_by_token_counts():
    """pc = [-2, -1], counts = [4, 2] -> n = [0.5, 0.5]; all_chosen: 0.5; outcome_chosen: 0.25."""
    pc, pr, rc, rr, is_step, beta = hand_pairs()
    counts = torch.tensor([4, 2])
    kwargs = {"beta": beta, "chosen_token_counts": counts, "nll_reduction": "mean"}
    out = ipr_objective(pc, pr, rc, rr, is_step, **kwargs)
    torch.testing.assert_close(out.nll, torch.tensor(0.5))
    out = ipr_objective(pc, pr, rc, rr, is_step, nll_on="outcome_chosen", **kwargs)
    torch.testing.assert_close(out.nll, torch.tensor(0.25))
    # counts are ignored with the default "sum" reduction
    out = ipr_objective(pc, pr, rc, rr, is_step, beta=beta, chosen_token_counts=counts)
    torch.testing.assert_close(out.nll, torch.tensor(1.5))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"pc": torch.zeros(3)}, "shape"),
        ({"rr": torch.zeros(2, 1)}, "shape"),
        ({"is_step": torch.tensor([0, 1])}, "bool"),
        ({"is_step": torch.tensor([True, False, True])}, "shape"),
        ({"nll_on": "rejected"}, "nll_on"),
        ({"nll_reduction": "max"}, "nll_reduction"),
        ({"nll_reduction": "mean"}, "chosen_token_counts"),
        ({"nll_reduction": "mean", "chosen_token_counts": torch.ones(3)}, "shape"),
        ({"w_step": -1.0}, "weights"),
        ({"w_sft": 0.0, "w_outcome": 0.0, "w_step": 0.0}, "weights"),
    ],
)
def test_ipr_rejects_bad_inputs(change, match):
    pc, pr, rc, rr, is_step, beta = hand_pairs()
    args = {"pc": pc, "pr": pr, "rc": rc, "rr": rr, "is_step": is_step}
    kwargs = {"beta": beta}
    for key, value in change.items():
        (args if key in args else kwargs)[key] = value
    with pytest.raises(ValueError, match=match):
        ipr_objective(args["pc"], args["pr"], args["rc"], args["rr"], args["is_step"], **kwargs)


def test_ipr_rejects_empty_batch():
    e = torch.zeros(0)
    with pytest.raises(ValueError, match="empty"):
        ipr_objective(e, e, e, e, torch.zeros(0, dtype=torch.bool), beta=0.1)
