"""Mask statistics shared by training logs, evaluation reports, plots and benchmarks.

Cell figures, for masks shaped [B, D, T] (or broadcastable [1, D, T]):

- complementarity    = 1 - mean(input_mask * target_mask)
- coverage           = mean(input_mask + target_mask)
- balance            = mean(input_mask) / (mean(input_mask) + mean(target_mask))
- temporal_diversity = mean over B, D of the variance over T of the masks
- pair_diversity     = mean over D, T of the variance over the batch of the masks

Both diversities average the input and the target mask.

Band figures (``band_*``): the same five figures computed on the pooled masks P(input_mask),
P(target_mask) [B, K, W] of a `band_layout.BandLayout` (mean over each band's channels and each
window's frames; the incomplete last window is dropped). For the MDCT codec the bands are 24
mel-spaced bands and the windows 9 frames (48 ms); for EnCodec latents (channels are not
frequencies) the one "band" is all channels, so band figures pool over time only. A mask that
alternates single bins scores cell complementarity 1 but band complementarity 0.75 where every
band holds an even number of bins (0.80 at D = 128, whose four lowest one-bin bands stay whole):
both songs in every band, a blend. A split at a band edge scores 1 at both.

band_switches: the number of owner changes across frequency per window, i.e. the mean over pairs
and windows of sum_k |P(m)[k + 1] - P(m)[k]| over adjacent bands (input and target averaged).
A low/high split scores 1, a split into three registers 2, a comb of alternating bands about
K - 1, a 50/50 blend 0. It exposes the next comb one level up: masks that alternate whole bands
score band complementarity 1, yet keep both songs in every octave. Always 0 for a layout of one
band (EnCodec's time layout).

content_alignment: per pair, the Pearson correlation over all band-windows between
P(input_mask) - 0.5 and log(P(z_input^2) + eps) - log(P(z_target^2) + eps), averaged over pairs:
1 when each band-window goes to the song that is louder there (for a binary mask exactly 1 only
when the loudness difference takes two values; for a binary mask and a continuous difference the
ceiling is lower, e.g. the point-biserial sqrt(2 / pi) ~ 0.80 for a Gaussian one), 0 for masks
unrelated to loudness and for a constant mask (standard deviation < 1e-6, e.g. a 50/50 blend:
the correlation is undefined there), -1 when the quieter song keeps every band-window. eps is
1e-4 times the pair's mean band energy (40 dB down), so that digital silence in one song does not
dominate the correlation and the figure does not depend on the latents' scale.

Every value is a detached fp32 0-d tensor so that callers decide when to synchronise with the
host (logging intervals only).
"""

from __future__ import annotations

import torch
from torch import Tensor

from songweave.audio.band_layout import BandLayout

METRIC_NAMES = ("complementarity", "coverage", "balance", "temporal_diversity", "pair_diversity")
BAND_METRIC_NAMES = tuple(f"band_{name}" for name in METRIC_NAMES)

# Display labels of every statistic, in display order (band figures first): training logs,
# evaluation reports and plots all use this table.
METRIC_LABELS: dict[str, str] = {
    "band_complementarity": "band compl.",
    "band_coverage": "band coverage",
    "band_balance": "band balance",
    "band_temporal_diversity": "band temporal div.",
    "band_pair_diversity": "band pair div.",
    "band_switches": "band switches",
    "content_alignment": "content align.",
    "complementarity": "cell compl.",
    "coverage": "cell coverage",
    "balance": "cell balance",
    "temporal_diversity": "cell temporal div.",
    "pair_diversity": "cell pair div.",
}
# Every statistic `all_mask_statistics` returns, in display order.
STATISTIC_NAMES = tuple(METRIC_LABELS)

# Guards the balance ratio when both masks are all zero, and Pearson's denominator.
_EPS = 1e-8
# Below this standard deviation over band-windows a pair's pooled mask counts as constant.
_CONSTANT_STD = 1e-6
# The log-energy floor of content_alignment, relative to the pair's mean band energy (-40 dB).
_RELATIVE_ENERGY_FLOOR = 1e-4


def _temporal_diversity(mask: Tensor) -> Tensor:
    if mask.shape[-1] < 2:
        return mask.new_zeros(())
    return mask.var(dim=-1, unbiased=False).mean()


def _pair_diversity(mask: Tensor) -> Tensor:
    # A mask shared by the whole batch ([1, D, T]) is by definition the same for every pair.
    if mask.shape[0] < 2:
        return mask.new_zeros(())
    return mask.var(dim=0, unbiased=False).mean()


def frequency_switches(band_mask: Tensor) -> Tensor:
    """Mean over pairs and windows of sum_k |m[k + 1] - m[k]| for band masks [B, K, W], 0-d."""
    if band_mask.shape[1] < 2:
        return band_mask.new_zeros(())
    return band_mask.diff(dim=1).abs().sum(dim=1).mean()


def _figures(input_mask: Tensor, target_mask: Tensor) -> dict[str, Tensor]:
    input_mean = input_mask.mean()
    target_mean = target_mask.mean()
    return {
        "complementarity": 1.0 - (input_mask * target_mask).mean(),
        "coverage": input_mean + target_mean,
        "balance": input_mean / (input_mean + target_mean).clamp_min(_EPS),
        "temporal_diversity": 0.5
        * (_temporal_diversity(input_mask) + _temporal_diversity(target_mask)),
        "pair_diversity": 0.5 * (_pair_diversity(input_mask) + _pair_diversity(target_mask)),
    }


def _check_masks(input_mask: Tensor, target_mask: Tensor) -> None:
    if input_mask.dim() != 3 or target_mask.dim() != 3:
        raise ValueError(
            f"masks must be [B, D, T], got {tuple(input_mask.shape)} and {tuple(target_mask.shape)}"
        )


@torch.no_grad()
def mask_statistics(input_mask: Tensor, target_mask: Tensor) -> dict[str, Tensor]:
    """The five cell figures (METRIC_NAMES) as detached fp32 0-d tensors."""
    _check_masks(input_mask, target_mask)
    return _figures(input_mask.detach().float(), target_mask.detach().float())


@torch.no_grad()
def band_mask_statistics(
    input_mask: Tensor, target_mask: Tensor, layout: BandLayout
) -> dict[str, Tensor]:
    """The five figures on band-window pooled masks (BAND_METRIC_NAMES) and band_switches,
    detached fp32 0-d tensors."""
    _check_masks(input_mask, target_mask)
    pooled_input = layout.pool(input_mask.detach().float(), drop_incomplete=True)
    pooled_target = layout.pool(target_mask.detach().float(), drop_incomplete=True)
    figures = _figures(pooled_input, pooled_target)
    statistics = {f"band_{name}": value for name, value in figures.items()}
    statistics["band_switches"] = 0.5 * (
        frequency_switches(pooled_input) + frequency_switches(pooled_target)
    )
    return statistics


@torch.no_grad()
def loudness_difference(
    encoded_input: Tensor, encoded_target: Tensor, layout: BandLayout, drop_incomplete: bool
) -> Tensor:
    """log P(z_in^2) - log P(z_tg^2) per band-window [B, K, W], fp32 without gradient: how much
    louder the input is there, in natural-log units. The floor (-40 dB of the pair's mean band
    energy) keeps band-windows silent in both songs at 0 instead of a ratio of rounding errors."""
    input_energy = layout.pool(encoded_input.detach().float().square(), drop_incomplete)
    target_energy = layout.pool(encoded_target.detach().float().square(), drop_incomplete)
    floor = (
        _RELATIVE_ENERGY_FLOOR
        * 0.5
        * (
            input_energy.mean(dim=(1, 2), keepdim=True)
            + target_energy.mean(dim=(1, 2), keepdim=True)
        )
    )
    floor = floor.clamp_min(torch.finfo(torch.float32).tiny)
    return torch.log(input_energy + floor) - torch.log(target_energy + floor)


@torch.no_grad()
def content_alignment(
    input_mask: Tensor, encoded_input: Tensor, encoded_target: Tensor, layout: BandLayout
) -> Tensor:
    """Mean over pairs of corr(P(input_mask) - 0.5, log P(z_in^2) - log P(z_tg^2)), 0-d fp32."""
    if encoded_input.shape != encoded_target.shape:
        raise ValueError(
            f"input and target latents differ in shape: {tuple(encoded_input.shape)} vs "
            f"{tuple(encoded_target.shape)}"
        )
    batch = encoded_input.shape[0]
    if (
        input_mask.dim() != 3
        or input_mask.shape[0] not in (1, batch)
        or input_mask.shape[1:] != encoded_input.shape[1:]
    ):
        raise ValueError(
            f"input_mask {tuple(input_mask.shape)} does not fit latents "
            f"{tuple(encoded_input.shape)}"
        )
    mask = layout.pool(input_mask.detach().float(), drop_incomplete=True) - 0.5
    louder = loudness_difference(encoded_input, encoded_target, layout, drop_incomplete=True)
    mask = mask.expand_as(louder).flatten(1)
    louder = louder.flatten(1)
    mask = mask - mask.mean(dim=1, keepdim=True)
    louder = louder - louder.mean(dim=1, keepdim=True)
    mask_norm, louder_norm = mask.norm(dim=1), louder.norm(dim=1)
    # A constant mask (or loudness difference) has no correlation: count it as 0, not as the
    # correlation of its rounding errors.
    floor = _CONSTANT_STD * mask.shape[1] ** 0.5
    defined = (mask_norm > floor) & (louder_norm > floor)
    correlation = (mask * louder).sum(dim=1) / (mask_norm * louder_norm).clamp_min(_EPS)
    return torch.where(defined, correlation, torch.zeros_like(correlation)).mean()


@torch.no_grad()
def all_mask_statistics(
    input_mask: Tensor,
    target_mask: Tensor,
    encoded_input: Tensor,
    encoded_target: Tensor,
    layout: BandLayout,
) -> dict[str, Tensor]:
    """Every statistic of STATISTIC_NAMES: band figures, content_alignment, cell figures."""
    statistics = band_mask_statistics(input_mask, target_mask, layout)
    statistics["content_alignment"] = content_alignment(
        input_mask, encoded_input, encoded_target, layout
    )
    statistics.update(mask_statistics(input_mask, target_mask))
    return {name: statistics[name] for name in STATISTIC_NAMES}
