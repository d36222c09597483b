import subprocess
import sys
from pathlib import Path

import pytest
import torch

from creative_agent import AttentionMaskGenerator, CreativeAgent, StyleDiscriminator, self_test
from mask_metrics import mask_statistics

ROOT = Path(__file__).resolve().parents[1]


def _latents(batch=2, dim=16, frames=24, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, dim, frames, generator=generator), torch.randn(batch, dim, frames, generator=generator)


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
    assert torch.equal(decision.input_mask, input_mask) and torch.equal(decision.target_mask, target_mask)
    assert torch.equal(decision.reg_loss, reg_loss)
    assert set(decision.terms) == {"overlap", "coverage_error", "imbalance", "temporal_diversity", "reg_loss"}
    assert all(t.dim() == 0 and not t.requires_grad for t in decision.terms.values())
    assert torch.allclose(decision.terms["reg_loss"], reg_loss.detach())
    assert decision.attention is None
    with_attention = generator.decide(encoded_input, encoded_target, need_weights=True)
    assert with_attention.attention.shape == (2, 24, 24) and not with_attention.attention.requires_grad
    assert torch.allclose(with_attention.attention.sum(-1), torch.ones(2, 24))
    assert torch.allclose(with_attention.input_mask, input_mask, atol=1e-5)


def test_regularization_matches_hand_computation():
    generator = AttentionMaskGenerator(4, hidden_dim=8, complementarity_weight=1.0, coverage_weight=2.0, balance_weight=3.0, temporal_diversity_weight=0.5)
    input_mask = torch.tensor([[[1.0, 0.0, 1.0, 0.0]]]).expand(1, 4, 4)
    target_mask = torch.full((1, 4, 4), 0.5)
    loss, terms = generator.regularization(input_mask, target_mask)
    overlap = 0.25  # mean of [0.5, 0, 0.5, 0]
    coverage_error = 0.25  # (1.5-1)^2 and (0.5-1)^2 both 0.25
    imbalance = 0.0
    temporal_diversity = 0.5 * (0.25 + 0.0)
    assert loss.item() == pytest.approx(overlap + 2.0 * coverage_error + 3.0 * imbalance - 0.5 * temporal_diversity)
    assert terms["overlap"].item() == pytest.approx(overlap)
    assert terms["coverage_error"].item() == pytest.approx(coverage_error)
    assert terms["temporal_diversity"].item() == pytest.approx(temporal_diversity)


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
    assert set(input_mask.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(target_mask, 1 - input_mask)
    (input_mask * encoded_input).sum().backward()
    assert generator.input_mask_head[-1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("shared", [True, False])
def test_gradients_reach_every_agent_parameter(shared):
    agent = CreativeAgent(16, use_discriminator=True, hidden_dim=32, shared_weights=shared)
    encoded_input, encoded_target = _latents()
    masked_input, masked_target, reg_loss = agent.generate_creative_masks(encoded_input, encoded_target)
    generator_loss, discriminator_loss = agent.adversarial_loss(masked_input + masked_target, encoded_target)
    ((masked_input + masked_target).pow(2).mean() + reg_loss + generator_loss + discriminator_loss).backward()
    missing = [name for name, p in agent.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
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
    result = subprocess.run([sys.executable, "creative_agent.py"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Complementarity:" in result.stdout and "Coverage:" in result.stdout and "Gradient norm:" in result.stdout


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
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode != 0
    assert "FAILED" in result.stdout


def test_masks_follow_magnitude_not_the_sign_of_latents():
    # MDCT signs are phase-like noise; a mask that followed them would be "adaptive" only to noise.
    generator = AttentionMaskGenerator(16, hidden_dim=32).eval()
    encoded_input, encoded_target = _latents()
    input_mask, _, _ = generator(encoded_input, encoded_target)
    flipped_mask, _, _ = generator(-encoded_input, encoded_target)
    assert torch.allclose(input_mask, flipped_mask)
