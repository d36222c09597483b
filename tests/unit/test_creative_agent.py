import subprocess
import sys

import pytest
import torch
from helpers import ROOT

from creative_agent import AttentionMaskGenerator, CreativeAgent, StyleDiscriminator, self_test
from songweave.audio.band_layout import BandLayout
from songweave.model.mask_metrics import band_mask_statistics, mask_statistics


def _latents(batch=2, dim=16, frames=24, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, dim, frames, generator=generator), torch.randn(
        batch, dim, frames, generator=generator
    )


@pytest.mark.parametrize("shared", [True, False])
def test_masks_have_shape_and_range(shared):
    generator = AttentionMaskGenerator(16, hidden_dim=32, shared_weights=shared)
    encoded_input, encoded_target = _latents()
    input_mask, target_mask, reg_loss = generator(encoded_input, encoded_target)
    assert input_mask.shape == target_mask.shape == encoded_input.shape
    for mask in (input_mask, target_mask):
        assert torch.all((mask >= 0) & (mask <= 1))
    assert reg_loss.dim() == 0 and torch.isfinite(reg_loss)


@pytest.mark.parametrize("shared", [True, False])
def test_decide_returns_the_forward_masks_terms_and_attention_on_request(shared):
    generator = AttentionMaskGenerator(16, hidden_dim=32, shared_weights=shared).eval()
    encoded_input, encoded_target = _latents()
    input_mask, target_mask, reg_loss = generator(encoded_input, encoded_target)
    decision = generator.decide(encoded_input, encoded_target)
    assert torch.equal(decision.input_mask, input_mask) and torch.equal(
        decision.target_mask, target_mask
    )
    assert torch.equal(decision.reg_loss, reg_loss)
    assert set(decision.terms) == {
        "overlap",
        "coverage_error",
        "imbalance",
        "temporal_diversity",
        "switches",
        "reg_loss",
    }
    assert all(t.dim() == 0 and not t.requires_grad for t in decision.terms.values())
    assert torch.allclose(decision.terms["reg_loss"], reg_loss.detach())
    assert decision.attention is None
    with_attention = generator.decide(encoded_input, encoded_target, need_weights=True)
    assert (
        with_attention.attention.shape == (2, 24, 24) and not with_attention.attention.requires_grad
    )
    assert torch.allclose(with_attention.attention.sum(-1), torch.ones(2, 24))
    assert torch.allclose(with_attention.input_mask, input_mask, atol=1e-5)


def test_regularization_matches_hand_computation():
    generator = AttentionMaskGenerator(
        4,
        hidden_dim=8,
        complementarity_weight=1.0,
        coverage_weight=2.0,
        balance_weight=3.0,
        temporal_diversity_weight=0.5,
    )
    input_mask = torch.tensor([[[1.0, 0.0, 1.0, 0.0]]]).expand(1, 4, 4)
    target_mask = torch.full((1, 4, 4), 0.5)
    loss, terms = generator.regularization(input_mask, target_mask)
    overlap = 0.25  # mean of [0.5, 0, 0.5, 0]
    coverage_error = 0.25  # (1.5-1)^2 and (0.5-1)^2 both 0.25
    imbalance = 0.0
    temporal_diversity = 0.5 * (0.25 + 0.0)
    assert loss.item() == pytest.approx(
        overlap + 2.0 * coverage_error + 3.0 * imbalance - 0.5 * temporal_diversity
    )
    assert terms["overlap"].item() == pytest.approx(overlap)
    assert terms["coverage_error"].item() == pytest.approx(coverage_error)
    assert terms["temporal_diversity"].item() == pytest.approx(temporal_diversity)
    assert terms["switches"].item() == 0.0  # every band has the same owner in each window


def test_switch_term_charges_owner_changes_across_frequency():
    generator = AttentionMaskGenerator(4, hidden_dim=8, switch_weight=0.7)
    comb = torch.tensor([1.0, 0.0, 1.0, 0.0])[None, :, None].expand(1, 4, 3)
    split = torch.tensor([1.0, 1.0, 0.0, 0.0])[None, :, None].expand(1, 4, 3)
    comb_loss, comb_terms = generator.regularization(comb, 1 - comb)
    split_loss, split_terms = generator.regularization(split, 1 - split)
    assert comb_terms["switches"].item() == 3.0 and split_terms["switches"].item() == 1.0
    assert (comb_loss - split_loss).item() == pytest.approx(0.7 * 2.0)
    # A blend is no way out: half a switch per band edge, more than the split's one.
    blend = torch.full((1, 4, 3), 0.5)
    assert generator.regularization(blend, 1 - blend)[1]["switches"].item() == pytest.approx(1.5)
    # On a soft split the switch term's gradient pushes the outer bands towards their neighbour's
    # owner (the lowest up, the highest down), never towards 0.5; at the edge the pulls cancel.
    only_switches = AttentionMaskGenerator(
        4,
        hidden_dim=8,
        complementarity_weight=0.0,
        coverage_weight=0.0,
        balance_weight=0.0,
        temporal_diversity_weight=0.0,
        switch_weight=1.0,
    )
    soft = torch.tensor([0.8, 0.8, 0.2, 0.2])[None, :, None].repeat(1, 1, 3).requires_grad_(True)
    only_switches.regularization(soft, 1 - soft)[0].backward()
    assert (soft.grad[0, 0] < 0).all() and (soft.grad[0, 3] > 0).all()
    assert soft.grad[0, 1:3].abs().max().item() < 1e-6


def test_shared_generator_swaps_masks_when_songs_swap():
    generator = AttentionMaskGenerator(16, hidden_dim=32).eval()
    encoded_input, encoded_target = _latents()
    input_mask, target_mask, _ = generator(encoded_input, encoded_target)
    swapped_input_mask, swapped_target_mask, _ = generator(encoded_target, encoded_input)
    assert torch.allclose(input_mask, swapped_target_mask, atol=1e-6)
    assert torch.allclose(target_mask, swapped_input_mask, atol=1e-6)


def test_identical_songs_get_an_even_split():
    # Nothing distinguishes the songs, so no cell can be claimed by either: the competitive agent
    # has no static preference to fall back on.
    generator = AttentionMaskGenerator(16, hidden_dim=32).eval()
    song, _ = _latents()
    input_mask, _, _ = generator(song, song)
    assert torch.allclose(input_mask, torch.full_like(input_mask, 0.5), atol=1e-6)


def test_hard_masks_are_binary_complementary_and_pass_gradients():
    generator = AttentionMaskGenerator(16, hidden_dim=32)
    encoded_input, encoded_target = _latents()
    input_mask, target_mask, _ = generator(encoded_input, encoded_target, hard=True)
    layout = generator.layout
    # Binary band values, spread with the layout's crossfades between windows.
    window_centres = torch.arange(
        layout.window_frames // 2, input_mask.shape[-1], layout.window_frames
    )
    first_channels = [layout.band_of_channel.index(band) for band in range(layout.num_bands)]
    values = input_mask[:, first_channels][..., window_centres]
    assert set(values.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(input_mask, layout.spread(values, input_mask.shape[-1]))
    assert torch.equal(target_mask, 1 - input_mask)
    (input_mask * encoded_input).sum().backward()
    assert generator.input_mask_head[-1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("shared", [True, False])
def test_gradients_reach_every_agent_parameter(shared):
    agent = CreativeAgent(16, use_discriminator=True, hidden_dim=32, shared_weights=shared)
    encoded_input, encoded_target = _latents()
    masked_input, masked_target, reg_loss = agent.generate_creative_masks(
        encoded_input, encoded_target
    )
    generator_loss, discriminator_loss = agent.adversarial_loss(
        masked_input + masked_target, encoded_target
    )
    (
        (masked_input + masked_target).pow(2).mean()
        + reg_loss
        + generator_loss
        + discriminator_loss
    ).backward()
    missing = [
        name
        for name, p in agent.named_parameters()
        if p.grad is None or not torch.isfinite(p.grad).all()
    ]
    assert not missing


def test_discriminator_downsamples_by_eight_and_reports_probabilities():
    discriminator = StyleDiscriminator(16, hidden_dim=32)
    features = discriminator.encoder(torch.randn(3, 16, 64))
    assert features.shape[-1] == 8
    agent = CreativeAgent(16, hidden_dim=32)
    real_fake, style = agent.judge_quality(torch.randn(3, 16, 64))
    assert real_fake.shape == style.shape == (3,)
    assert torch.all((real_fake > 0) & (real_fake < 1)) and torch.all((style > 0) & (style < 1))


def test_adversarial_losses_stay_finite_under_bf16_autocast():
    agent = CreativeAgent(16, hidden_dim=32)
    fake, real = torch.randn(2, 16, 32) * 50, torch.randn(2, 16, 32) * 50
    with torch.autocast("cpu", dtype=torch.bfloat16):
        generator_loss, discriminator_loss = agent.adversarial_loss(fake, real)
    assert generator_loss.dtype == torch.float32
    assert torch.isfinite(generator_loss) and torch.isfinite(discriminator_loss)


def test_discriminator_off_is_a_clear_error():
    agent = CreativeAgent(16, use_discriminator=False, hidden_dim=32)
    with pytest.raises(RuntimeError, match="use_discriminator=True"):
        agent.judge_quality(torch.randn(1, 16, 16))
    with pytest.raises(RuntimeError, match="use_discriminator=True"):
        agent.adversarial_loss(torch.randn(1, 16, 16), torch.randn(1, 16, 16))


def test_untrained_masks_are_about_75_percent_complementary():
    generator = AttentionMaskGenerator(32, hidden_dim=64)
    encoded_input, encoded_target = _latents(batch=4, dim=32, frames=100)
    with torch.no_grad():
        input_mask, target_mask, _ = generator(encoded_input, encoded_target)
    stats = mask_statistics(input_mask, target_mask)
    # Far from binary before training (the seed reports ~75%; disjoint binary masks give 100%).
    assert 0.70 < stats["complementarity"].item() < 0.90


def test_mismatched_latents_are_a_clear_error():
    generator = AttentionMaskGenerator(16, hidden_dim=32)
    with pytest.raises(ValueError, match="differ in shape"):
        generator(torch.randn(1, 16, 10), torch.randn(1, 16, 12))
    with pytest.raises(ValueError, match=r"expected latents \[B, 16, T\]"):
        generator(torch.randn(1, 8, 10), torch.randn(1, 8, 10))


def test_self_test_passes_and_reports_a_nan_agent(capsys):
    agent = CreativeAgent(16, hidden_dim=32)
    assert self_test(agent, batch=2, frames=32) == []
    with torch.no_grad():
        agent.mask_generator.input_mask_head[-1].weight[0, 0, 0] = float("nan")
    failures = self_test(agent, batch=2, frames=32)
    assert any("non-finite" in failure or "not finite" in failure for failure in failures)
    assert "Complementarity" in capsys.readouterr().out


def test_self_test_script_exits_zero_and_prints_figures():
    result = subprocess.run(
        [sys.executable, "creative_agent.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "Complementarity:" in result.stdout
        and "Coverage:" in result.stdout
        and "Gradient norm:" in result.stdout
    )


def test_self_test_script_exits_nonzero_on_broken_agent(tmp_path):
    script = tmp_path / "broken.py"
    script.write_text(
        "import sys, torch\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "import creative_agent\n"
        "original = creative_agent.AttentionMaskGenerator.claims\n"
        "def broken(self, *args, **kwargs):\n"
        "    input_claim, target_claim, attention = original(self, *args, **kwargs)\n"
        "    return input_claim * float('nan'), target_claim, attention\n"
        "creative_agent.AttentionMaskGenerator.claims = broken\n"
        "sys.exit(creative_agent.main())\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode != 0
    assert "FAILED" in result.stdout


def test_masks_follow_magnitude_not_the_sign_of_latents():
    # MDCT signs are phase-like noise; a mask that followed them would be "adaptive" only to noise.
    generator = AttentionMaskGenerator(16, hidden_dim=32).eval()
    encoded_input, encoded_target = _latents()
    input_mask, _, _ = generator(encoded_input, encoded_target)
    flipped_mask, _, _ = generator(-encoded_input, encoded_target)
    assert torch.allclose(input_mask, flipped_mask)


def _band_channels(layout):
    return [
        [c for c, b in enumerate(layout.band_of_channel) if b == band]
        for band in range(layout.num_bands)
    ]


def _comb_claims(original):
    # The strongest possible push towards a within-band comb: alternate +5 / -5 claims per bin.
    def claims(*args, **kwargs):
        input_claim, target_claim, attention = original(*args, **kwargs)
        comb = torch.where(torch.arange(input_claim.shape[1]) % 2 == 0, 5.0, -5.0)[None, :, None]
        return input_claim + comb, target_claim - comb, attention

    return claims


@pytest.mark.parametrize(
    "shared, balance", [(True, "median"), (True, "penalty"), (False, "penalty")]
)
@pytest.mark.parametrize("hard", [False, True])
def test_agent_cannot_produce_a_within_band_comb(monkeypatch, shared, balance, hard):
    generator = AttentionMaskGenerator(64, hidden_dim=32, shared_weights=shared, balance=balance)
    encoded_input, encoded_target = _latents(dim=64, frames=40)
    plain = generator.decide(encoded_input, encoded_target, hard=hard)
    monkeypatch.setattr(generator, "claims", _comb_claims(generator.claims))
    decision = generator.decide(encoded_input, encoded_target, hard=hard)
    layout = generator.layout
    for mask in (decision.input_mask, decision.target_mask):
        for channels in _band_channels(layout):
            band = mask[:, channels]
            assert torch.equal(band, band[:, :1].expand_as(band))  # no variation within a band
    # Between window boundaries the mask is constant in time, too.
    for window in range(5):
        start, stop = window * 9 + (1 if window else 0), min(window * 9 + 8, 40)
        inside = decision.input_mask[..., start:stop]
        assert torch.equal(inside, inside[..., :1].expand_as(inside))
    if balance == "median":
        return  # the comb moves the median, hence every band; the rest is about pooling alone
    # The comb only moves bands of an odd number of bins; in the others it cancels out.
    for channels in _band_channels(layout):
        if len(channels) % 2 == 0:
            assert torch.allclose(
                decision.input_mask[:, channels], plain.input_mask[:, channels], atol=1e-5
            )
    # Bands of one bin follow its claim, which the comb saturates.
    singles = [channels[0] for channels in _band_channels(layout) if len(channels) == 1]
    assert {0, 1} <= set(singles)
    assert torch.all(decision.input_mask[:, [c for c in singles if c % 2 == 0]] > 0.99)
    assert torch.all(decision.input_mask[:, [c for c in singles if c % 2 == 1]] < 0.01)


def test_regularizer_penalizes_what_the_band_figures_measure():
    layout = BandLayout.mel(32, 24_000, window_frames=5, transition_frames=0)
    generator = AttentionMaskGenerator(32, hidden_dim=32, temperature=0.01, layout=layout)
    encoded_input, encoded_target = _latents(dim=32, frames=40)
    decision = generator.decide(encoded_input, encoded_target)
    band = band_mask_statistics(decision.input_mask, decision.target_mask, layout)
    assert decision.terms["overlap"].item() == pytest.approx(
        1 - band["band_complementarity"].item(), abs=1e-6
    )
    assert decision.terms["temporal_diversity"].item() == pytest.approx(
        band["band_temporal_diversity"].item(), abs=1e-6
    )
    balance_error = (band["band_balance"].item() - 0.5) ** 2 * 2  # coverage is exactly 1 here
    assert decision.terms["imbalance"].item() == pytest.approx(balance_error, abs=1e-6)


def test_time_layout_masks_are_constant_over_channels():
    generator = AttentionMaskGenerator(
        16, hidden_dim=32, temperature=0.01, layout=BandLayout.time(16, 4)
    )
    input_mask, _, _ = generator(*_latents())
    assert torch.equal(input_mask, input_mask[:, :1].expand_as(input_mask))
    assert input_mask.std() > 0  # still varies over windows


def test_default_layout_is_mdct_mel_and_a_mismatched_layout_is_a_clear_error():
    assert AttentionMaskGenerator(128, hidden_dim=32).layout == BandLayout.mel(128, 24_000)
    with pytest.raises(ValueError, match="covers 16 channels, the latents have 32"):
        AttentionMaskGenerator(32, hidden_dim=32, layout=BandLayout.time(16))


def test_median_balance_gives_each_song_half_of_every_pair():
    generator = AttentionMaskGenerator(32, hidden_dim=32, temperature=0.01)
    encoded_input, encoded_target = _latents(batch=3, dim=32, frames=36, seed=3)
    # Make the input far louder: left free, the claims would favour it almost everywhere.
    decision = generator.decide(4.0 * encoded_input, encoded_target, hard=True)
    band_input = generator.layout.pool(decision.input_mask, drop_incomplete=False)
    per_pair_share = band_input.flatten(1).mean(dim=1)
    assert torch.allclose(per_pair_share, torch.full_like(per_pair_share, 0.5), atol=0.02)
    penalty_only = AttentionMaskGenerator(32, hidden_dim=32, temperature=0.01, balance="penalty")
    penalty_only.load_state_dict(generator.state_dict())
    free = penalty_only.decide(4.0 * encoded_input, encoded_target, hard=True)
    free_band = generator.layout.pool(free.input_mask, drop_incomplete=False)
    free_share = free_band.flatten(1).mean(dim=1)
    assert not torch.allclose(free_share, per_pair_share, atol=0.05)


def test_median_balance_keeps_the_swap_symmetry_and_rejects_the_seed_design():
    generator = AttentionMaskGenerator(16, hidden_dim=32, balance="median").eval()
    encoded_input, encoded_target = _latents(frames=27)
    input_mask, target_mask, _ = generator(encoded_input, encoded_target)
    swapped_input_mask, _, _ = generator(encoded_target, encoded_input)
    assert torch.allclose(input_mask, 1 - swapped_input_mask, atol=1e-6)
    assert torch.allclose(target_mask, swapped_input_mask, atol=1e-6)
    with pytest.raises(ValueError, match="shared_weights"):
        AttentionMaskGenerator(16, hidden_dim=32, shared_weights=False, balance="median")
    with pytest.raises(ValueError, match="unknown balance"):
        AttentionMaskGenerator(16, hidden_dim=32, balance="half")


def test_loudness_prior_starts_the_agent_at_the_louder_song_rule():
    layout = BandLayout.mel(32, 24_000, bands=4, window_frames=6)
    encoded_input, encoded_target = _latents(batch=2, dim=32, frames=36, seed=5)
    # Make each song louder in half of the band-windows (the share the median split gives it):
    # the rule "louder keeps it" is clear there.
    seeds = (torch.Generator().manual_seed(i) for i in (1, 2))
    order = torch.stack([torch.randperm(24, generator=seed) for seed in seeds])
    louder = (order < 12).view(2, 4, 6)
    gain = layout.spread(louder.float(), 36) * 9.0 + 1.0
    encoded_input, encoded_target = encoded_input * gain, encoded_target * (10.0 - gain + 1.0)
    with torch.no_grad():
        agent = AttentionMaskGenerator(32, hidden_dim=32, layout=layout, loudness_prior=50.0)
        band_input = layout.pool(agent(encoded_input, encoded_target, hard=True)[0], False)
    follows = ((band_input > 0.5) == louder).float().mean().item()
    assert follows > 0.9
    # Swapping the songs still swaps the masks; the scale is learned; off means no parameter.
    with torch.no_grad():
        swapped = layout.pool(agent(encoded_target, encoded_input, hard=True)[0], False)
    assert torch.allclose(swapped, 1 - band_input, atol=1e-6)
    agent.zero_grad()
    agent(encoded_input, encoded_target)[2].backward()
    assert agent.loudness_scale.grad is not None
    plain = AttentionMaskGenerator(32, hidden_dim=32)
    assert "loudness_scale" not in dict(plain.named_parameters())
    with pytest.raises(ValueError, match="loudness_prior needs shared_weights"):
        AttentionMaskGenerator(16, hidden_dim=32, shared_weights=False, loudness_prior=1.0)
