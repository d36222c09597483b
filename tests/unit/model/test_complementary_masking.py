"""Tests for the fixed complementary masks (songweave/model/fixed_masks.py)."""

import math

import pytest
import torch

from songweave.audio.band_layout import BandLayout
from songweave.model.fixed_masks import (
    LAYOUT_MASK_TYPES,
    MASK_TYPES,
    apply_complementary_mask,
    clear_mask_cache,
    complementary_masks,
    describe_mask,
)

D = 16
LAYOUT = BandLayout.mel(D, 24_000)


def latents(batch: int = 3, frames: int = 300, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, D, frames, generator=g), torch.randn(batch, D, frames, generator=g)


def complementarity(input_mask: torch.Tensor, target_mask: torch.Tensor) -> float:
    # complementarity = 1 - mean(input_mask * target_mask) (docs/design.md)
    return float(1.0 - (input_mask * target_mask).mean())


@pytest.mark.parametrize("mask_type", MASK_TYPES)
def test_shape_range_dtype(mask_type: str) -> None:
    x, y = latents(batch=3, frames=64)
    input_mask, target_mask = complementary_masks(
        mask_type, x, y, layout=LAYOUT, temporal_segment_frames=10
    )
    expected_batch = 3 if mask_type in ("energy", *LAYOUT_MASK_TYPES) else 1
    for mask in (input_mask, target_mask):
        assert mask.shape == (expected_batch, D, 64)
        assert mask.dtype == x.dtype and mask.device == x.device
        assert float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0
        assert (x * mask).shape == x.shape  # broadcasts against the latents
    assert describe_mask(mask_type) and "\n" not in describe_mask(mask_type)


def test_none_is_all_ones() -> None:
    x, y = latents(frames=20)
    input_mask, target_mask = complementary_masks("none", x, y)
    assert torch.equal(input_mask, torch.ones(1, D, 20))
    assert torch.equal(target_mask, torch.ones(1, D, 20))


@pytest.mark.parametrize("frames", [300, 750])
def test_temporal_complementarity_at_default_segment(frames: int) -> None:
    x, y = latents(batch=2, frames=frames)
    input_mask, target_mask = complementary_masks("temporal", x, y, temporal_balanced=False)
    assert complementarity(input_mask, target_mask) >= 0.96
    assert torch.allclose(input_mask + target_mask, torch.ones_like(input_mask))
    # Input owns segment 0 (frames 0..149), the target segment 1 (150..299), away from the fades.
    assert torch.all(input_mask[..., :140] == 1) and torch.all(target_mask[..., :140] == 0)
    assert torch.all(input_mask[..., 160:290] == 0) and torch.all(target_mask[..., 160:290] == 1)
    # Constant over channels: a time-only mask.
    assert torch.equal(input_mask, input_mask[:, :1].expand_as(input_mask))


@pytest.mark.parametrize("frames, segment", [(375, 187.5), (750, 187.5), (300, 150.0), (189, 94.5)])
def test_temporal_is_balanced_by_default(frames: int, segment: float) -> None:
    x, y = latents(batch=1, frames=frames)
    input_mask, target_mask = complementary_masks("temporal", x, y)
    assert input_mask.mean().item() == pytest.approx(0.5, abs=1e-6)
    assert torch.allclose(input_mask + target_mask, torch.ones_like(input_mask))
    first_target_frame = int((input_mask[0, 0] < 0.5).nonzero()[0])
    assert first_target_frame == math.floor(segment - 0.5) + 1  # first centre past the boundary
    unbalanced, _ = complementary_masks("temporal", x, y, temporal_balanced=False)
    if frames % 300:
        assert unbalanced.mean().item() != pytest.approx(0.5, abs=0.01)


def test_temporal_fades_at_boundaries_only() -> None:
    x, y = latents(batch=1, frames=100)
    input_mask, _ = complementary_masks(
        "temporal", x, y, temporal_segment_frames=20, fade_frames=4, temporal_balanced=False
    )
    row = input_mask[0, 0]
    soft = ((row > 0) & (row < 1)).nonzero().flatten().tolist()
    # Four fractional frames around each inner boundary (20, 40, 60, 80), none at start or end.
    assert soft == [b + k for b in (20, 40, 60, 80) for k in (-2, -1, 0, 1)]
    assert row[0] == 1.0 and row[-1] == 1.0  # segments 0 and 4 (the last) belong to the input
    # Linear, monotone ramp down across the first boundary, crossing 0.5 at the boundary.
    ramp = row[17:23]
    assert torch.all(ramp[1:] <= ramp[:-1])
    assert float(row[19]) > 0.5 > float(row[20])
    hard, _ = complementary_masks(
        "temporal", x, y, temporal_segment_frames=20, fade_frames=0, temporal_balanced=False
    )
    assert set(hard.unique().tolist()) == {0.0, 1.0}


def test_frequency_split_and_attenuation() -> None:
    x, y = latents(frames=30)
    input_mask, target_mask = complementary_masks("frequency", x, y)  # ratio 0.3 of 16 -> 5 low
    assert complementarity(input_mask, target_mask) == 1.0
    assert torch.all(input_mask[:, :5] == 1) and torch.all(input_mask[:, 5:] == 0)
    assert torch.equal(target_mask, 1 - input_mask)
    # The seed's setting: dropped bands keep 20% -> complementarity 0.8.
    soft_in, soft_tg = complementary_masks("frequency", x, y, attenuation=0.2)
    assert torch.allclose(soft_in[:, 5:], torch.full_like(soft_in[:, 5:], 0.2))
    assert complementarity(soft_in, soft_tg) == pytest.approx(0.8, abs=1e-6)


def test_spectral_deterministic_given_seed_and_complementary() -> None:
    x, y = latents(frames=12)
    state = torch.random.get_rng_state()
    first, target = complementary_masks("spectral", x, y, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    clear_mask_cache()
    again, _ = complementary_masks("spectral", x, y, seed=3)
    assert first is not again and torch.equal(first, again)
    other, _ = complementary_masks("spectral", x, y, seed=4)
    assert not torch.equal(first, other)
    assert complementarity(first, target) == 1.0
    assert int(first[0, :, 0].sum()) == D // 2  # channel_keep_ratio 0.5
    assert torch.equal(first, first[..., :1].expand_as(first))  # constant over time


def test_energy_depends_on_content_and_is_complementary() -> None:
    frames = 40
    x = torch.randn(2, D, frames, generator=torch.Generator().manual_seed(1)) * 0.1
    x[0, :, :10] *= 50.0  # item 0 loud at the start
    x[1, :, -10:] *= 50.0  # item 1 loud at the end
    y = torch.randn(2, D, frames)
    input_mask, target_mask = complementary_masks("energy", x, y, energy_threshold=0.7)
    assert input_mask.shape == (2, D, frames)
    assert not torch.equal(input_mask[0], input_mask[1])
    assert torch.all(input_mask[0, :, :10] == 1) and torch.all(input_mask[1, :, -10:] == 1)
    assert torch.equal(target_mask, 1 - input_mask)
    assert complementarity(input_mask, target_mask) == 1.0
    # About 30% of the frames are above the 0.7 quantile.
    assert float(input_mask.mean()) == pytest.approx(0.3, abs=0.05)
    # Silent input: finite, everything goes to the target.
    silent_in, silent_tg = complementary_masks("energy", torch.zeros(1, D, frames), None)
    assert torch.all(silent_in == 0) and torch.all(silent_tg == 1)


def test_hybrid_combines_time_and_frequency() -> None:
    x, y = latents(frames=40)
    input_mask, target_mask = complementary_masks(
        "hybrid", x, y, temporal_segment_frames=20, fade_frames=0
    )
    low = 5  # round(0.3 * 16)
    assert torch.all(input_mask[0, :low, :20] == 1) and torch.all(input_mask[0, low:, :20] == 0)
    assert torch.all(input_mask[0, :low, 20:] == 0) and torch.all(input_mask[0, low:, 20:] == 1)
    assert torch.equal(target_mask, 1 - input_mask)
    assert complementarity(input_mask, target_mask) == 1.0


def test_static_masks_are_cached_per_key() -> None:
    x, y = latents(frames=50)
    first = complementary_masks("temporal", x, y, temporal_segment_frames=10)
    second = complementary_masks("temporal", x * 2, y, temporal_segment_frames=10)
    assert first[0] is second[0] and first[1].data_ptr() == second[1].data_ptr()
    # A different option, length or dtype is a different entry.
    other = complementary_masks("temporal", x, y, temporal_segment_frames=11)
    assert other[0] is not first[0]
    shorter = complementary_masks("temporal", x[..., :40], y[..., :40], temporal_segment_frames=10)
    assert shorter[0].shape[-1] == 40
    half = complementary_masks("temporal", x.double(), y.double(), temporal_segment_frames=10)
    assert half[0].dtype == torch.float64


def test_mask_built_under_inference_mode_usable_for_training() -> None:
    clear_mask_cache()
    x, y = latents(frames=30)
    with torch.inference_mode():
        complementary_masks("frequency", x, y)
    x = x.clone().requires_grad_(True)
    masked_input, _ = apply_complementary_mask(x, y, "frequency")
    masked_input.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("mask_type", MASK_TYPES)
def test_apply_multiplies(mask_type: str) -> None:
    x, y = latents(frames=60)
    masked_input, masked_target = apply_complementary_mask(
        x, y, mask_type, layout=LAYOUT, temporal_segment_frames=15
    )
    input_mask, target_mask = complementary_masks(
        mask_type, x, y, layout=LAYOUT, temporal_segment_frames=15
    )
    assert torch.equal(masked_input, x * input_mask)
    assert torch.equal(masked_target, y * target_mask)
    assert masked_input.shape == x.shape and masked_target.shape == y.shape


def test_apply_default_is_temporal() -> None:
    x, y = latents(frames=300)
    masked_input, masked_target = apply_complementary_mask(x, y)
    assert torch.equal(masked_input[..., 160:290], torch.zeros_like(masked_input[..., 160:290]))
    assert torch.equal(masked_target[..., :140], torch.zeros_like(masked_target[..., :140]))


@pytest.mark.parametrize(
    "options",
    [
        {"temporal_segment_frames": 0},
        {"temporal_segment_frames": -5},
        {"temporal_segment_frames": 2.5},
        {"fade_frames": -1},
        {"fade_frames": 200},
        {"freq_split_ratio": 0.0},
        {"freq_split_ratio": 1.0},
        {"channel_keep_ratio": 1.5},
        {"energy_threshold": -0.1},
        {"attenuation": 1.0},
        {"seed": -1},
        {"segment_frames": 10},  # typo of temporal_segment_frames
    ],
)
def test_bad_options_raise_one_line(options: dict) -> None:
    x, y = latents(frames=20)
    with pytest.raises(ValueError) as info:
        complementary_masks("temporal", x, y, **options)
    assert "\n" not in str(info.value)


def test_bad_type_and_shapes_raise() -> None:
    x, y = latents(frames=20)
    with pytest.raises(
        ValueError, match="valid: none, temporal, frequency, spectral, energy, hybrid, band_energy"
    ):
        complementary_masks("random", x, y)
    with pytest.raises(ValueError):
        describe_mask("bogus")
    with pytest.raises(ValueError, match="encoded_target"):
        complementary_masks("temporal", x, y[..., :10])
    with pytest.raises(ValueError, match="encoded_input"):
        complementary_masks("temporal", x[0], y[0])


def _louder_in(
    pattern: torch.Tensor, frames: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents [B, D, T] where the input is 10x louder in the band-windows where pattern is True."""
    g = torch.Generator().manual_seed(seed)
    louder = LAYOUT.spread(pattern.float(), frames) > 0.5
    x = torch.randn(pattern.shape[0], D, frames, generator=g) * torch.where(louder, 1.0, 0.1)
    y = torch.randn(pattern.shape[0], D, frames, generator=g) * torch.where(louder, 0.1, 1.0)
    return x, y


def test_band_energy_gives_each_band_window_to_the_louder_song() -> None:
    frames = 40  # windows of 9 frames: the last one holds 4
    pattern = torch.rand(2, LAYOUT.num_bands, 5, generator=torch.Generator().manual_seed(3)) < 0.5
    x, y = _louder_in(pattern, frames)
    input_mask, target_mask = complementary_masks("band_energy", x, y, layout=LAYOUT)
    assert input_mask.shape == target_mask.shape == (2, D, frames)
    assert torch.equal(input_mask, LAYOUT.spread(pattern.float(), frames))
    assert torch.allclose(input_mask + target_mask, torch.ones_like(input_mask))
    swapped_input, _ = complementary_masks("band_energy", y, x, layout=LAYOUT)
    assert torch.equal(swapped_input, target_mask)
    # No parameters and no gradient: a fixed reference.
    x.requires_grad_(True)
    assert not complementary_masks("band_energy", x, y, layout=LAYOUT)[0].requires_grad


def test_band_energy_median_gives_each_song_the_half_where_it_is_louder() -> None:
    g = torch.Generator().manual_seed(5)
    # The input is louder than the target almost everywhere (gain 1-100): band_energy would give
    # it nearly every band-window, the median split exactly the louder half.
    gain = 10 ** (2 * torch.rand(2, LAYOUT.num_bands, 4, generator=g))  # four whole windows
    # Constant within each band-window, with no crossfade between windows.
    band_of_channel = torch.tensor(LAYOUT.band_of_channel)
    x = gain[:, band_of_channel].repeat_interleave(LAYOUT.window_frames, dim=-1)
    y = torch.ones_like(x)
    input_mask, target_mask = complementary_masks("band_energy_median", x, y, layout=LAYOUT)
    # Pooled, the crossfades at window edges leave values near (not at) 0 and 1.
    band_input = LAYOUT.pool(input_mask, drop_incomplete=False) > 0.5
    assert torch.equal(band_input.float().mean(dim=(1, 2)), torch.full((2,), 0.5))
    for kept, gains in zip(band_input, gain):
        assert gains[kept].min() > gains[~kept].max()
    assert (
        float(
            LAYOUT.pool(
                complementary_masks("band_energy", x, y, layout=LAYOUT)[0], drop_incomplete=False
            ).mean()
        )
        > 0.9
    )
    assert torch.allclose(input_mask + target_mask, torch.ones_like(input_mask))
    swapped_input, _ = complementary_masks("band_energy_median", y, x, layout=LAYOUT)
    assert torch.equal(swapped_input, target_mask)


def test_band_energy_silence_attenuation_and_errors() -> None:
    silence = torch.zeros(1, D, 18)
    input_mask, target_mask = complementary_masks("band_energy", silence, silence, layout=LAYOUT)
    assert torch.all(input_mask == 0) and torch.all(target_mask == 1)  # ties go to the target
    soft, _ = complementary_masks("band_energy", silence, silence, layout=LAYOUT, attenuation=0.2)
    assert torch.allclose(soft, torch.full_like(soft, 0.2))
    with pytest.raises(ValueError, match="needs layout="):
        complementary_masks("band_energy", silence, silence)
    with pytest.raises(ValueError, match="pass encoded_target"):
        complementary_masks("band_energy", silence, layout=LAYOUT)
    with pytest.raises(ValueError, match="covers 128 channels"):
        complementary_masks("band_energy", silence, silence, layout=BandLayout.mel(128, 24_000))
