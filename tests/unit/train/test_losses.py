"""Loss tests: each term against a hand-computed value, weight-0 skipping, silence, errors."""

import math

import pytest
import torch

from songweave.audio.codecs import MDCTCodec
from songweave.train import losses
from songweave.train.losses import (
    LossWeights,
    ReconstructionLoss,
    latent_spectral_distance,
    multi_resolution_mel_distance,
    multi_resolution_stft_distance,
    si_sdr,
)

LENGTH = 6000  # 0.25 s at 24 kHz keeps every test fast


def noise(batch: int = 2, length: int = LENGTH, seed: int = 0, scale: float = 0.1) -> torch.Tensor:
    return torch.randn(batch, 1, length, generator=torch.Generator().manual_seed(seed)) * scale


def test_stft_distance_zero_identical_known_for_scaled_positive_otherwise():
    a = noise()
    same = multi_resolution_stft_distance(a, a)
    assert same.shape == (2,) and torch.all(same == 0)
    # |2A| vs |A|: spectral convergence ||A||/||A|| = 1, log-magnitude L1 = log 2.
    doubled = multi_resolution_stft_distance(2 * a, a)
    assert torch.allclose(doubled, torch.full((2,), 1 + math.log(2)), atol=1e-3)
    assert torch.all(multi_resolution_stft_distance(noise(seed=1), a) > 0.5)
    assert multi_resolution_stft_distance(a[:, 0], a[:, 0]).shape == (2,)  # [B, S] works too


def test_mel_distance_known_for_scaled():
    a = noise()
    assert torch.all(multi_resolution_mel_distance(a, a) == 0)
    assert torch.allclose(
        multi_resolution_mel_distance(2 * a, a), torch.full((2,), math.log(2)), atol=1e-3
    )


def test_si_sdr_known_values():
    reference = torch.tensor([1.0, -1.0, 1.0, -1.0] * 4).view(1, 1, -1)
    orthogonal = 0.5 * torch.tensor([1.0, 1.0, -1.0, -1.0] * 4).view(1, 1, -1)
    # Zero-mean, orthogonal noise: SI-SDR = 10 log10(||r||^2 / ||n||^2) = 10 log10(4).
    assert si_sdr(reference + orthogonal, reference).item() == pytest.approx(
        10 * math.log10(4), abs=1e-4
    )
    assert si_sdr(0.3 * reference, reference).item() > 80  # scale invariant
    batch = noise()
    assert si_sdr(batch, batch).shape == (2,)


def test_audio_rms_terms_match_hand_computed():
    mdct = MDCTCodec()
    target = noise(seed=0)
    inputs = noise(seed=1)
    signs = torch.where(torch.arange(LENGTH) % 2 == 0, 1.0, -1.0).view(1, 1, -1)
    output_audio = target + 0.1 * signs  # differs from target by exactly 0.1 everywhere
    output_latent = mdct.encode(output_audio)
    loss = ReconstructionLoss(mdct, "audio", LossWeights(input=0.5, target=2.0, spectral=0, mel=0))
    total, terms = loss(output_latent, mdct.encode(inputs), mdct.encode(target), inputs, target)
    expected_input = (output_audio - inputs).square().mean().sqrt().item()
    assert set(terms) == {"rms_input", "rms_target"}
    assert terms["rms_target"].item() == pytest.approx(0.1, rel=1e-4)
    assert terms["rms_input"].item() == pytest.approx(expected_input, rel=1e-4)
    assert total.item() == pytest.approx(0.5 * expected_input + 2.0 * 0.1, rel=1e-4)
    assert not terms["rms_target"].requires_grad


def test_audio_spectral_and_mel_terms_match_functions():
    mdct = MDCTCodec()
    target = noise(seed=3)
    output = mdct.encode(2 * target).requires_grad_()
    loss = ReconstructionLoss(mdct, "audio", LossWeights(input=0, target=0, spectral=1, mel=1))
    total, terms = loss(output, output.detach(), output.detach(), None, target)
    assert terms["spectral"].item() == pytest.approx(1 + math.log(2), abs=1e-3)
    assert terms["mel"].item() == pytest.approx(math.log(2), abs=1e-3)
    total.backward()
    assert torch.isfinite(output.grad).all() and output.grad.abs().sum() > 0


def test_latent_terms_match_hand_computed():
    target = torch.ones(2, 8, 16)
    inputs = 3 * torch.ones(2, 8, 16)
    output = torch.zeros(2, 8, 16, requires_grad=True)
    loss = ReconstructionLoss(MDCTCodec(), "latent", LossWeights(input=1, target=1, spectral=0))
    total, terms = loss(output, inputs, target)
    assert terms["rms_input"].item() == pytest.approx(3.0, rel=1e-6)
    assert terms["rms_target"].item() == pytest.approx(1.0, rel=1e-6)
    assert total.item() == pytest.approx(4.0, rel=1e-6)
    # Doubling the magnitude: log-RMS L1 = log 2 at every pooling (magnitudes well above the
    # log floor, so the floor does not blur the figure).
    generator = torch.Generator().manual_seed(0)
    magnitude = 0.5 + torch.rand(2, 8, 40, generator=generator)
    z = magnitude * torch.randn(2, 8, 40, generator=generator).sign()
    assert latent_spectral_distance(-2 * z, z).item() == pytest.approx(math.log(2), abs=1e-4)
    assert latent_spectral_distance(z, z).item() == 0


def test_zero_weight_skips_the_computation(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("computed a term whose weight is 0")

    calls = []
    real_stft = losses.multi_resolution_stft_distance

    def spy(*args, **kwargs):
        calls.append(1)
        return real_stft(*args, **kwargs)

    monkeypatch.setattr(losses, "multi_resolution_mel_distance", forbidden)
    monkeypatch.setattr(losses, "latent_spectral_distance", forbidden)
    monkeypatch.setattr(losses, "multi_resolution_stft_distance", spy)
    mdct = MDCTCodec()
    target = noise()
    z = mdct.encode(target)
    _, terms = ReconstructionLoss(mdct, "audio", LossWeights(input=0, mel=0))(z, z, z, None, target)
    assert set(terms) == {"rms_target", "spectral"} and calls == [1]
    monkeypatch.setattr(losses, "multi_resolution_stft_distance", forbidden)
    _, terms = ReconstructionLoss(mdct, "audio", LossWeights(spectral=0))(z, z, z, target, target)
    assert set(terms) == {"rms_input", "rms_target"}
    _, terms = ReconstructionLoss(mdct, "latent", LossWeights(spectral=0))(z, z, z)
    assert set(terms) == {"rms_input", "rms_target"}


@pytest.mark.parametrize("domain", ["audio", "latent"])
def test_silence_gives_finite_loss_and_gradients(domain):
    mdct = MDCTCodec()
    silent = torch.zeros(2, 1, LENGTH)
    latent = mdct.encode(silent)
    output = latent.clone().requires_grad_()
    weights = LossWeights(input=1, target=1, spectral=1, mel=1 if domain == "audio" else 0)
    total, terms = ReconstructionLoss(mdct, domain, weights)(output, latent, latent, silent, silent)
    total.backward()
    assert torch.isfinite(total) and all(torch.isfinite(v) for v in terms.values())
    assert torch.isfinite(output.grad).all()
    assert torch.isfinite(si_sdr(silent, silent)).all()
    # A non-silent output against a silent target stays finite too.
    loud = torch.randn(2, 1, LENGTH, requires_grad=True)
    distance = multi_resolution_stft_distance(loud, silent).sum()
    distance.backward()
    assert torch.isfinite(distance) and torch.isfinite(loud.grad).all()


def test_fp32_under_autocast():
    mdct = MDCTCodec()
    target = noise()
    z = mdct.encode(target).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, _ = ReconstructionLoss(mdct)(z, z, z, target, target)
    assert total.dtype == torch.float32 and total.item() < 1e-3


def test_configuration_errors():
    mdct = MDCTCodec()
    with pytest.raises(ValueError, match="mel"):
        ReconstructionLoss(mdct, "latent", LossWeights(mel=1.0))
    with pytest.raises(ValueError, match="loss_domain"):
        ReconstructionLoss(mdct, "waveform")
    with pytest.raises(ValueError, match="all loss weights are 0"):
        ReconstructionLoss(mdct, "audio", LossWeights(0, 0, 0, 0))
    with pytest.raises(ValueError, match=">= 0"):
        ReconstructionLoss(mdct, "audio", LossWeights(input=-1))
    z = mdct.encode(noise())
    with pytest.raises(ValueError, match="target_audio"):
        ReconstructionLoss(mdct, "audio", LossWeights(input=0))(z, z, z)
    with pytest.raises(ValueError, match="input_audio"):
        ReconstructionLoss(mdct, "audio")(z, z, z, None, noise())


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_audio_domain_with_encodec_codec():
    from songweave.audio.codecs import get_codec

    encodec = get_codec("encodec", weights="random")
    z = torch.randn(1, 128, 10, requires_grad=True)  # decodes to 3200 samples
    target = noise(batch=1, length=3000)
    total, terms = ReconstructionLoss(encodec, "audio", LossWeights(mel=0.5))(
        z, z.detach(), z.detach(), target, target
    )
    total.backward()
    assert set(terms) == {"rms_input", "rms_target", "spectral", "mel"}
    assert torch.isfinite(total) and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_cached_windows_survive_inference_mode():
    losses._hann_window.cache_clear()
    losses._mel_filterbank.cache_clear()
    a = noise(batch=1)
    with torch.inference_mode():  # e.g. validation runs first and fills the caches
        multi_resolution_stft_distance(a, a)
        multi_resolution_mel_distance(a, a)
    b = a.clone().requires_grad_()
    (multi_resolution_stft_distance(b, a) + multi_resolution_mel_distance(b, a)).sum().backward()
    assert torch.isfinite(b.grad).all()


# ------------------------------------------------------------------ the arrangement objective


def _pair_batch(dim: int = 16, frames: int = 24) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return {
        "input_latent": torch.randn(2, dim, frames, generator=generator),
        "target_latent": torch.randn(2, dim, frames, generator=generator),
    }


def _halves(dim: int = 16, frames: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """The input leads the lower half of the bands, the target the upper half."""
    input_mask = torch.zeros(1, dim, frames)
    input_mask[:, : dim // 2] = 1.0
    return input_mask, 1.0 - input_mask


def test_owned_reference_holds_each_song_where_it_leads():
    batch = _pair_batch()
    input_mask, target_mask = _halves()
    reference = losses.owned_reference(
        batch["input_latent"], batch["target_latent"], input_mask, target_mask
    )
    assert torch.equal(reference[:, :8], batch["input_latent"][:, :8])
    assert torch.equal(reference[:, 8:], batch["target_latent"][:, 8:])


@pytest.mark.parametrize("domain", ["latent", "audio"])
def test_arrangement_objective_is_zero_on_the_owned_reference_and_not_on_the_target(domain):
    mdct = MDCTCodec(dim=16)
    batch = _pair_batch()
    if domain == "audio":
        batch["input_audio"] = mdct.decode(batch["input_latent"])
        batch["target_audio"] = mdct.decode(batch["target_latent"])
    masks = _halves()
    weights = LossWeights(input=0, target=1, spectral=1, mel=0)
    loss = losses.TrainingLoss(
        ReconstructionLoss(mdct, domain, weights), mask_reg_weight=0, objective="arrangement"
    )
    reference = losses.owned_reference(batch["input_latent"], batch["target_latent"], *masks)
    on_reference = loss(reference, batch, None, masks=masks).terms["reconstruction"]
    on_target = loss(batch["target_latent"], batch, None, masks=masks).terms["reconstruction"]
    assert on_reference.item() == pytest.approx(0.0, abs=1e-3)
    assert on_target.item() > 0.1
    # The continuation objective says the opposite: the target is the answer.
    continuation = losses.TrainingLoss(ReconstructionLoss(mdct, domain, weights), 0)
    assert continuation(batch["target_latent"], batch, None).terms["reconstruction"] < 1e-3


def test_arrangement_objective_sends_no_gradient_to_the_masks_and_needs_them():
    mdct = MDCTCodec(dim=16)
    batch = _pair_batch()
    input_mask, _ = _halves()
    input_mask.requires_grad_(True)
    output = torch.randn(2, 16, 24, requires_grad=True)
    loss = losses.TrainingLoss(
        ReconstructionLoss(mdct, "latent", LossWeights(input=0)), 0, objective="arrangement"
    )
    loss(output, batch, None, masks=(input_mask, 1.0 - input_mask)).total.backward()
    assert output.grad is not None and input_mask.grad is None
    with pytest.raises(ValueError, match="needs the masks"):
        loss(output, batch, None)
    with pytest.raises(ValueError, match="objective must be one of"):
        losses.TrainingLoss(ReconstructionLoss(mdct, "latent"), 0, objective="remix")
