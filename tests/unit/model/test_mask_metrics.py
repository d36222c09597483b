"""Tests for songweave/model/mask_metrics.py: cell figures, band figures and content alignment."""

import pytest
import torch

from songweave.audio.band_layout import BandLayout
from songweave.model.fixed_masks import complementary_masks
from songweave.model.mask_metrics import (
    BAND_METRIC_NAMES,
    METRIC_LABELS,
    METRIC_NAMES,
    STATISTIC_NAMES,
    all_mask_statistics,
    band_mask_statistics,
    content_alignment,
    mask_statistics,
)

MDCT = BandLayout.mel(128, 24_000)


def _comb(batch: int = 2, dim: int = 128, frames: int = 45) -> tuple[torch.Tensor, torch.Tensor]:
    input_mask = (torch.arange(dim) % 2 == 0).float()[None, :, None].expand(batch, dim, frames)
    return input_mask, 1.0 - input_mask


def test_a_comb_of_alternating_bins_is_complementary_per_cell_but_a_blend_per_band():
    input_mask, target_mask = _comb()
    assert mask_statistics(input_mask, target_mask)["complementarity"].item() == 1.0
    band = band_mask_statistics(input_mask, target_mask, MDCT)
    # Band k keeps the even share p_k of its bins: overlap p_k (1 - p_k); bands 0, 1, 2 and 4
    # hold one bin each (no overlap), the others are (nearly) half and half.
    shares = []
    for k in range(MDCT.num_bands):
        channels = [c for c, b in enumerate(MDCT.band_of_channel) if b == k]
        shares.append(sum(c % 2 == 0 for c in channels) / len(channels))
    expected = 1.0 - sum(p * (1 - p) for p in shares) / len(shares)
    assert band["band_complementarity"].item() == pytest.approx(expected, abs=1e-6)
    assert 0.75 < expected < 0.82
    # Where every band holds an even number of bins the comb is exactly a 50/50 blend.
    even = BandLayout("mel", (0, 0, 1, 1, 2, 2, 3, 3), window_frames=3)
    input_mask, target_mask = _comb(dim=8, frames=9)
    even_band = band_mask_statistics(input_mask, target_mask, even)
    assert even_band["band_complementarity"].item() == pytest.approx(0.75)
    assert even_band["band_coverage"].item() == pytest.approx(1.0)


def test_a_low_high_band_split_is_complementary_per_cell_and_per_band():
    split_channel = MDCT.band_of_channel.index(12)  # first bin of band 12: a band edge
    input_mask = (torch.arange(128) < split_channel).float()[None, :, None].expand(2, 128, 45)
    target_mask = 1.0 - input_mask
    assert mask_statistics(input_mask, target_mask)["complementarity"].item() == 1.0
    band = band_mask_statistics(input_mask, target_mask, MDCT)
    assert band["band_complementarity"].item() == 1.0
    assert band["band_balance"].item() == pytest.approx(0.5)  # 12 of 24 bands each
    assert band["band_temporal_diversity"].item() == 0.0
    assert band["band_pair_diversity"].item() == 0.0


def _band_pattern(owner_of_band: list[int], frames: int = 45) -> torch.Tensor:
    """Input mask [2, 128, frames] that gives band k of MDCT to the input when owner[k] == 1."""
    owner = torch.tensor(owner_of_band, dtype=torch.float32)[None, :, None]
    return MDCT.spread(owner.expand(2, -1, MDCT.num_windows(frames, False)), frames)


def test_band_switches_count_owner_changes_across_frequency():
    bands = MDCT.num_bands
    split = _band_pattern([1] * 12 + [0] * 12)
    three_registers = _band_pattern([1] * 8 + [0] * 8 + [1] * 8)
    band_comb = _band_pattern([k % 2 for k in range(bands)])
    for mask, switches in ((split, 1.0), (three_registers, 2.0), (band_comb, bands - 1.0)):
        band = band_mask_statistics(mask, 1 - mask, MDCT)
        assert band["band_switches"].item() == pytest.approx(switches)
        # A comb of whole bands passes every band figure: only the switches expose it.
        assert band["band_complementarity"].item() == 1.0
    half = torch.full((1, 128, 45), 0.5)
    blend = band_mask_statistics(half, half, MDCT)["band_switches"]
    assert blend.item() == pytest.approx(0.0, abs=1e-5)
    time_layout = BandLayout.time(128)
    assert (
        band_mask_statistics(band_comb, 1 - band_comb, time_layout)["band_switches"].item() == 0.0
    )


def test_a_blend_and_a_shared_mask():
    half = torch.full((1, 128, 45), 0.5)
    band = band_mask_statistics(half, half, MDCT)
    assert band["band_complementarity"].item() == pytest.approx(0.75)
    assert band["band_coverage"].item() == pytest.approx(1.0)
    assert band["band_balance"].item() == pytest.approx(0.5)
    # A [1, D, T] mask gives the figures of its expansion to the batch (pair diversity 0).
    input_mask = torch.rand(1, 128, 45)
    shared = band_mask_statistics(input_mask, 1 - input_mask, MDCT)
    expanded = band_mask_statistics(
        input_mask.expand(3, -1, -1), 1 - input_mask.expand(3, -1, -1), MDCT
    )
    for name in BAND_METRIC_NAMES:
        assert shared[name].item() == pytest.approx(expanded[name].item(), abs=1e-6)


def test_band_temporal_diversity_ignores_the_incomplete_last_window():
    layout = BandLayout("time", (0,), window_frames=2, transition_frames=0)
    input_mask = torch.tensor([[[1.0, 1.0, 0.0, 0.0, 1.0]]])
    band = band_mask_statistics(input_mask, 1 - input_mask, layout)
    assert band["band_temporal_diversity"].item() == pytest.approx(0.25)  # windows 1, 0
    assert band["band_balance"].item() == pytest.approx(0.5)


def _dominated_latents(batch: int = 3, frames: int = 90, seed: int = 0):
    """Songs where one song is 20 dB louder in each band-window (chosen at random)."""
    generator = torch.Generator().manual_seed(seed)
    windows = MDCT.num_windows(frames, drop_incomplete=False)
    input_louder = torch.rand(batch, MDCT.num_bands, windows, generator=generator) < 0.5
    louder = MDCT.spread(input_louder.float(), frames) > 0.5  # hard edges: transitions 0.25/0.75
    noise = torch.randn(2, batch, 128, frames, generator=generator)
    encoded_input = noise[0] * torch.where(louder, 1.0, 0.1)
    encoded_target = noise[1] * torch.where(louder, 0.1, 1.0)
    return encoded_input, encoded_target


def test_content_alignment_is_one_for_band_energy_and_zero_for_a_blend():
    encoded_input, encoded_target = _dominated_latents()
    input_mask, _ = complementary_masks("band_energy", encoded_input, encoded_target, layout=MDCT)
    assert content_alignment(input_mask, encoded_input, encoded_target, MDCT).item() > 0.97
    assert content_alignment(1 - input_mask, encoded_input, encoded_target, MDCT).item() < -0.97
    blend = torch.full((1, 128, 90), 0.5)
    assert content_alignment(blend, encoded_input, encoded_target, MDCT).item() == 0.0
    unrelated = torch.rand(3, MDCT.num_bands, 10, generator=torch.Generator().manual_seed(1)) < 0.5
    unrelated = MDCT.spread(unrelated.float(), 90)
    assert abs(content_alignment(unrelated, encoded_input, encoded_target, MDCT).item()) < 0.15


def test_content_alignment_ignores_scale_and_survives_silence():
    encoded_input, encoded_target = _dominated_latents()
    input_mask, _ = complementary_masks("band_energy", encoded_input, encoded_target, layout=MDCT)
    reference = content_alignment(input_mask, encoded_input, encoded_target, MDCT)
    scaled = content_alignment(input_mask, 1e3 * encoded_input, 1e3 * encoded_target, MDCT)
    assert scaled.item() == pytest.approx(reference.item(), abs=1e-4)
    silence = torch.zeros(3, 128, 90)
    value = content_alignment(input_mask, silence, silence, MDCT)
    assert torch.isfinite(value) and value.item() == 0.0
    with pytest.raises(ValueError, match="does not fit"):
        content_alignment(input_mask[:2], encoded_input, encoded_target, MDCT)


def test_all_statistics_and_labels_share_one_order_with_band_figures_first():
    assert STATISTIC_NAMES == (
        *BAND_METRIC_NAMES,
        "band_switches",
        "content_alignment",
        *METRIC_NAMES,
    )
    assert list(METRIC_LABELS) == list(STATISTIC_NAMES)
    assert len(set(METRIC_LABELS.values())) == len(METRIC_LABELS)
    encoded_input, encoded_target = _dominated_latents()
    input_mask, target_mask = complementary_masks(
        "band_energy", encoded_input, encoded_target, layout=MDCT
    )
    statistics = all_mask_statistics(input_mask, target_mask, encoded_input, encoded_target, MDCT)
    assert tuple(statistics) == STATISTIC_NAMES
    assert all(v.dim() == 0 and v.dtype == torch.float32 for v in statistics.values())
    cell = mask_statistics(input_mask, target_mask)
    assert all(torch.equal(statistics[name], cell[name]) for name in METRIC_NAMES)
