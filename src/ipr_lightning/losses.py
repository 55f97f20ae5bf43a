"""Losses of IPR training: sequence log-probs, SFT NLL, DPO and the combined IPR objective.

IPR (Xiong et al., EMNLP 2024) trains on three terms: the NLL of the expert (chosen)
trajectories, DPO on outcome-level pairs (j = 0, whole trajectories) and DPO on step-level
pairs (same prefix, diverging continuation). Everything here is a pure function over tensors:

    chosen = sequence_logps(policy_logits_c, labels_c)         # [B]
    out = ipr_objective(chosen, rejected, ref_chosen, ref_rejected, is_step, beta=0.1)
    out.loss.backward()

Label convention: `labels` is [B, T] with -100 at positions that carry no loss (prompt,
padding); logits[:, t] predicts labels[:, t + 1] (causal shift done here, not by the caller).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100
NLL_ON = ("all_chosen", "outcome_chosen")
NLL_REDUCTIONS = ("sum", "mean")
_CHUNK_ROWS = 4096
_PAIR_NAMES = (
    "policy_chosen_logps",
    "policy_rejected_logps",
    "ref_chosen_logps",
    "ref_rejected_logps",
)


class _LabelLogProb(torch.autograd.Function):
    """log p(target) for each row of [N, V] logits, upcast chunk by chunk.

    A plain `rows.float().log_softmax(-1)` would keep an [N, V] float32 copy alive for
    backward (several GiB for a 150k vocabulary); here only the caller's rows (original
    dtype) and the per-row logsumexp [N] are saved, and the softmax is recomputed per
    chunk in backward.
    """

    @staticmethod
    def forward(ctx, rows: Tensor, targets: Tensor, chunk: int) -> Tensor:  # type: ignore[override]
        compute = torch.promote_types(rows.dtype, torch.float32)
        out = rows.new_empty(rows.shape[0], dtype=compute)
        lse = rows.new_empty(rows.shape[0], dtype=compute)
        for s in range(0, rows.shape[0], chunk):
            block = rows[s : s + chunk].to(compute)
            lse[s : s + chunk] = torch.logsumexp(block, dim=-1)
            picked = block.gather(1, targets[s : s + chunk, None]).squeeze(1)
            out[s : s + chunk] = picked - lse[s : s + chunk]
        ctx.save_for_backward(rows, targets, lse)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        rows, targets, lse = ctx.saved_tensors
        grad_rows = torch.empty_like(rows)
        for s in range(0, rows.shape[0], ctx.chunk):
            g = grad_out[s : s + ctx.chunk, None].to(lse.dtype)
            # d/dx_v [x_y - logsumexp(x)] = onehot_y(v) - softmax(x)_v
            block = -torch.exp(rows[s : s + ctx.chunk].to(lse.dtype) - lse[s : s + ctx.chunk, None])
            block = block * g
            block.scatter_add_(1, targets[s : s + ctx.chunk, None], g)
            grad_rows[s : s + ctx.chunk] = block.to(rows.dtype)
        return grad_rows, None, None


def select_label_rows(x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Apply the causal shift and keep only positions with a label.

    Works on logits or on final hidden states alike, so a caller can run the LM head on the
    selected rows only (a [N, V] instead of a [B, T, V] tensor; N = trained tokens).

    Args: x [B, T, D] (logits D = V, or hidden states D = H), labels [B, T], -100 = masked.
    Returns: rows [N, D] of x[:, :-1] (x's dtype), targets [N] long, row index [N] long
    (which sequence each row belongs to, row-major), counts [B] long (N per sequence).
    """
    if x.dim() != 3 or labels.dim() != 2 or x.shape[:2] != labels.shape:
        raise ValueError(
            f"expected logits or hidden states [B, T, D] and labels [B, T], got {tuple(x.shape)} "
            f"and {tuple(labels.shape)}"
        )
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    # Boolean indexing first: any float32 upcast later only ever sees unmasked rows.
    rows = x[:, :-1][mask]
    row_index = mask.nonzero(as_tuple=True)[0]
    return rows, targets[mask].long(), row_index, mask.sum(dim=1)


def label_logps(row_logits: Tensor, targets: Tensor) -> Tensor:
    """log p(target) per row of [N, V] logits, in float32 (float64 for float64), chunked.

    Args: row_logits [N, V] any float dtype, targets [N] long in [0, V).
    Returns: [N]; differentiable w.r.t. row_logits.
    """
    if targets.numel() and (targets.min() < 0 or targets.max() >= row_logits.shape[-1]):
        raise ValueError(
            f"labels must be -100 or in [0, {row_logits.shape[-1]}), "
            f"got values in [{int(targets.min())}, {int(targets.max())}]"
        )
    return _LabelLogProb.apply(row_logits, targets, _CHUNK_ROWS)


def per_sequence(
    values: Tensor, row_index: Tensor, counts: Tensor, average: bool = False
) -> Tensor:
    """Sum (or mean) per sequence of per-token values [N] -> [B]; an empty row gives 0."""
    out = values.new_zeros(counts.shape[0]).index_add(0, row_index, values)
    if average:
        # clamp: an empty row has sum 0, so 0 / 1 = 0 instead of 0 / 0 = NaN.
        out = out / counts.clamp(min=1).to(out.dtype)
    return out


def sequence_logps(logits: Tensor, labels: Tensor, average: bool = False) -> Tensor:
    """Per-sequence log-probability of the unmasked labels.

    Args:
        logits: [B, T, V], any float dtype; logits[:, t] scores labels[:, t + 1].
        labels: [B, T] token ids, -100 where no loss is taken.
        average: return the mean over unmasked tokens instead of the sum.

    Returns:
        [B] float32 (float64 for float64 logits): sum (or mean) of log p(label). A row with
        no unmasked token gives 0 in both modes. Differentiable w.r.t. `logits`.
    """
    rows, targets, row_index, counts = select_label_rows(logits, labels)
    return per_sequence(label_logps(rows, targets), row_index, counts, average)


def nll_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Token-mean negative log-likelihood over the whole batch (the SFT loss).

    Equals `F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(),
    ignore_index=-100)`, but computed in float32 without a full [B, T, V] upcast.

    Args: logits [B, T, V], labels [B, T] with -100 = masked.
    Returns: scalar float32.
    Raises: ValueError if no label is unmasked (the mean would be 0 / 0).
    """
    rows, targets, _, _ = select_label_rows(logits, labels)
    return nll_from_logps(label_logps(rows, targets))


def nll_from_logps(values: Tensor) -> Tensor:
    """Token-mean NLL from per-token log-probs [N] (scalar); ValueError if N = 0."""
    if values.numel() == 0:
        raise ValueError("nll_loss: every label is -100 (after the causal shift); nothing to fit")
    return -values.mean()


def _check_pairs(named: dict[str, Tensor]) -> int:
    """Check every tensor is 1-D with the same length; return that length B."""
    shapes = {name: tuple(t.shape) for name, t in named.items()}
    if any(len(s) != 1 for s in shapes.values()) or len(set(shapes.values())) != 1:
        raise ValueError(f"expected tensors of shape [B] with the same B, got {shapes}")
    return next(iter(shapes.values()))[0]


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Sigmoid DPO (Rafailov et al.) with conservative label smoothing.

    z = beta * ((pc - rc) - (pr - rr));  loss = -logsigmoid(z) (1 - ls) - logsigmoid(-z) ls.
    Reference log-probs are detached: the reference model is frozen by definition, and
    this keeps it so even if the caller computed them with grad enabled.

    Args: four [B] tensors of sequence log-probs; beta > 0 typically; 0 <= ls < 0.5.
    Returns: (losses [B], chosen_rewards [B], rejected_rewards [B]); rewards are
    beta * (policy - reference), detached (for logging / reward accuracy).
    """
    pairs = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    _check_pairs(dict(zip(_PAIR_NAMES, pairs, strict=True)))
    chosen_ratio = policy_chosen_logps - ref_chosen_logps.detach()
    rejected_ratio = policy_rejected_logps - ref_rejected_logps.detach()
    z = beta * (chosen_ratio - rejected_ratio)
    losses = -F.logsigmoid(z) * (1 - label_smoothing) - F.logsigmoid(-z) * label_smoothing
    return losses, (beta * chosen_ratio).detach(), (beta * rejected_ratio).detach()


@dataclass(frozen=True)
class IPRLoss:
    """Result of `ipr_objective`.

    loss: scalar total, w_sft * nll + w_outcome * outcome_dpo + w_step * step_dpo.
    outcome_dpo, step_dpo, nll: scalar UNWEIGHTED terms. A term whose weight is 0 is left
        out of `loss` and of the graph; its value here is then computed without grad, for
        monitoring only (it may be non-finite without harming `loss`).
    chosen_rewards, rejected_rewards: [B], beta * (policy - reference), detached.
    """

    loss: Tensor
    outcome_dpo: Tensor
    step_dpo: Tensor
    nll: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor


def _weighted(weight: float, term: Callable[[], Tensor]) -> tuple[Tensor, Tensor | None]:
    """Evaluate a term; return (value, weighted contribution or None if weight is 0).

    A zero weight must drop the term from the graph, not multiply it by 0: 0 * NaN is NaN,
    and a NaN in a term's backward would still poison shared inputs.
    """
    if weight == 0:
        with torch.no_grad():
            return term(), None
    value = term()
    return value, weight * value


def ipr_objective(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    is_step: Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.0,
    w_sft: float = 1.0,
    w_outcome: float = 1.0,
    w_step: float = 1.0,
    chosen_token_counts: Tensor | None = None,
    nll_on: str = "all_chosen",
    nll_reduction: str = "sum",
) -> IPRLoss:
    """The IPR training loss on a batch mixing outcome and step preference pairs.

    Both DPO terms are normalised by the full batch size B, not by their own pair counts:
    outcome_dpo = sum_{outcome i} d_i / B, step_dpo = sum_{step i} d_i / B. With unit weights
    their sum is the plain DPO mean over the batch, which is what the authors' code does (it
    mixes both pair types in one dataset); it also keeps the loss scale independent of how
    a batch happens to split between the types.

    NLL per pair: n_i = -policy_chosen_logps_i (`nll_reduction="sum"`) or that divided by
    chosen_token_counts_i (`"mean"`). nll = sum over the selected pairs of n_i / B, where
    `nll_on="all_chosen"` selects every pair (a plain mean) and `"outcome_chosen"` only the
    outcome pairs (the paper's formulation: SFT on expert trajectories only).

    Args:
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps:
            [B] sequence log-probs (see `sequence_logps`).
        is_step: [B] bool, True for a step-level pair, False for an outcome pair.
        chosen_token_counts: [B] unmasked tokens of each chosen sequence; needed for "mean".
        beta, label_smoothing: as in `dpo_loss`. w_*: non-negative term weights.
    Returns: IPRLoss (scalar terms, [B] detached rewards).
    Raises: ValueError on bad shapes, dtypes, weights or option strings.
    """
    pairs = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    n_pairs = _check_ipr_inputs(
        pairs, is_step, chosen_token_counts, nll_on, nll_reduction, (w_sft, w_outcome, w_step)
    )

    outcome_dpo, outcome_part = _weighted(
        w_outcome, lambda: _dpo_sum(pairs, ~is_step, beta, label_smoothing) / n_pairs
    )
    step_dpo, step_part = _weighted(
        w_step, lambda: _dpo_sum(pairs, is_step, beta, label_smoothing) / n_pairs
    )
    nll_rows = is_step.new_ones(n_pairs) if nll_on == "all_chosen" else ~is_step
    counts = chosen_token_counts if nll_reduction == "mean" else None
    nll, nll_part = _weighted(
        w_sft, lambda: _nll_sum(policy_chosen_logps, counts, nll_rows) / n_pairs
    )
    total = sum(p for p in (nll_part, outcome_part, step_part) if p is not None)

    with torch.no_grad():  # rewards are detached anyway; skip building a graph for them
        _, chosen_rewards, rejected_rewards = dpo_loss(*pairs, beta, label_smoothing)
    return IPRLoss(total, outcome_dpo, step_dpo, nll, chosen_rewards, rejected_rewards)


def _check_ipr_inputs(
    pairs: tuple[Tensor, ...],
    is_step: Tensor,
    chosen_token_counts: Tensor | None,
    nll_on: str,
    nll_reduction: str,
    weights: tuple[float, ...],
) -> int:
    """Validate `ipr_objective`'s arguments (ValueError naming the problem); return B."""
    if nll_on not in NLL_ON:
        raise ValueError(f"nll_on must be one of {NLL_ON}, got {nll_on!r}")
    if nll_reduction not in NLL_REDUCTIONS:
        raise ValueError(f"nll_reduction must be one of {NLL_REDUCTIONS}, got {nll_reduction!r}")
    named = dict(zip(_PAIR_NAMES, pairs, strict=True)) | {"is_step": is_step}
    if nll_reduction == "mean":
        if chosen_token_counts is None:
            raise ValueError('nll_reduction="mean" needs chosen_token_counts ([B])')
        named["chosen_token_counts"] = chosen_token_counts
    n_pairs = _check_pairs(named)
    if is_step.dtype != torch.bool:
        raise ValueError(f"is_step must be a bool tensor, got dtype {is_step.dtype}")
    if n_pairs == 0:
        raise ValueError("ipr_objective: empty batch (B = 0)")
    if any(not w >= 0 for w in weights) or all(w == 0 for w in weights):
        raise ValueError(f"weights (w_sft, w_outcome, w_step) must be >= 0, not all 0: {weights}")
    return n_pairs


def _dpo_sum(pairs: tuple[Tensor, ...], rows: Tensor, beta: float, ls: float) -> Tensor:
    """Sum of DPO losses over the pairs selected by the [B] bool `rows` (scalar).

    The other pairs are indexed away before the loss, so a NaN there cannot reach this
    term's value or gradient.
    """
    losses, _, _ = dpo_loss(*(t[rows] for t in pairs), beta, ls)
    return losses.sum()


def _nll_sum(chosen_logps: Tensor, token_counts: Tensor | None, rows: Tensor) -> Tensor:
    """Sum over the selected [B] bool `rows` of -log p(chosen) (per token if counts given)."""
    nll = -chosen_logps[rows]
    if token_counts is not None:
        nll = nll / token_counts[rows].to(nll.dtype)
    return nll.sum()
