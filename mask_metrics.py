"""Mask statistics shared by training logs, evaluation reports and benchmarks.

Definitions (DESIGN.md), for masks shaped [B, D, T] (or broadcastable [1, D, T]):

- complementarity    = 1 - mean(input_mask * target_mask)
- coverage           = mean(input_mask + target_mask)
- balance            = mean(input_mask) / (mean(input_mask) + mean(target_mask))
- temporal_diversity = mean over B, D of the variance over T of the masks
- pair_diversity     = mean over D, T of the variance over the batch of the masks

Both diversities average the input and the target mask. Every value is a detached 0-d tensor so
that callers decide when to synchronise with the host (logging intervals only).
"""

from __future__ import annotations

import torch
from torch import Tensor

METRIC_NAMES = ("complementarity", "coverage", "balance", "temporal_diversity", "pair_diversity")

# Guards the balance ratio when both masks are all zero.
_EPS = 1e-8


def _temporal_diversity(mask: Tensor) -> Tensor:
    if mask.shape[-1] < 2:
        return mask.new_zeros(())
    return mask.var(dim=-1, unbiased=False).mean()


def _pair_diversity(mask: Tensor) -> Tensor:
    # A mask shared by the whole batch ([1, D, T]) is by definition the same for every pair.
    if mask.shape[0] < 2:
        return mask.new_zeros(())
    return mask.var(dim=0, unbiased=False).mean()


@torch.no_grad()
def mask_statistics(input_mask: Tensor, target_mask: Tensor) -> dict[str, Tensor]:
    """Return the five DESIGN.md mask figures as detached fp32 0-d tensors."""
    input_mask = input_mask.detach().float()
    target_mask = target_mask.detach().float()
    input_mean = input_mask.mean()
    target_mean = target_mask.mean()
    return {
        "complementarity": 1.0 - (input_mask * target_mask).mean(),
        "coverage": input_mean + target_mean,
        "balance": input_mean / (input_mean + target_mean).clamp_min(_EPS),
        "temporal_diversity": 0.5 * (_temporal_diversity(input_mask) + _temporal_diversity(target_mask)),
        "pair_diversity": 0.5 * (_pair_diversity(input_mask) + _pair_diversity(target_mask)),
    }
