"""Reconstruction losses on decoded audio or on latents, plus per-item metrics.

- `multi_resolution_stft_distance(a, b)`: spectral convergence + log-magnitude L1, averaged over
  FFT sizes; per item [B].
- `multi_resolution_mel_distance(a, b)`: log-mel L1 averaged over resolutions; per item [B].
- `si_sdr(estimate, reference)`: scale-invariant SDR in dB; per item [B].
- `ReconstructionLoss`: weighted sum of RMS-to-input, RMS-to-target, spectral and mel terms.
- `owned_reference(...)`: the arrangement objective's reference, each song where it leads.
- `TrainingLoss`: the whole training objective (reconstruction, the agent's mask regularizer,
  the adversarial term) as a `LossBreakdown` of named terms and their weighted total.

Everything runs in fp32 with autocast disabled; logs and divisions are guarded by eps so silent
audio gives finite values and finite gradients.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from creative_agent import adversarial_bce
from songweave.audio.codecs import SAMPLE_RATE, Codec, no_autocast
from songweave.runtime.precision import autocast_for

STFT_SIZES: tuple[int, ...] = (2048, 1024, 512, 256)
MEL_RESOLUTIONS: tuple[tuple[int, int], ...] = ((2048, 128), (1024, 64), (512, 32))
LATENT_POOLS: tuple[int, ...] = (1, 4, 16)
EPS = 1e-8  # floor for power spectra (-80 dB) and for divisions
RMS_EPS = 1e-10
LOSS_DOMAINS = ("audio", "latent")
# continuation: the output is compared with the target song (the seed's objective).
# arrangement: with both songs, each where the masks give it the lead (owned_reference).
OBJECTIVES = ("continuation", "arrangement")


@dataclass
class LossWeights:
    """Weights of the reconstruction terms; 0 skips a term entirely."""

    input: float = 0.2
    target: float = 1.0
    spectral: float = 1.0
    mel: float = 0.0


@functools.lru_cache(maxsize=32)
def _hann_window(n_fft: int, device: torch.device) -> Tensor:
    """Built once per (size, device) instead of on every call."""
    # Never cache an inference tensor: autograd could not save it for backward later.
    with torch.inference_mode(False):
        return torch.hann_window(n_fft, dtype=torch.float32, device=device)


@functools.lru_cache(maxsize=32)
def _mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, device: torch.device) -> Tensor:
    """[n_fft//2+1, n_mels] triangular mel filters, built once per configuration and device."""
    from torchaudio.functional import melscale_fbanks

    with torch.inference_mode(False):
        banks = melscale_fbanks(n_fft // 2 + 1, 0.0, sample_rate / 2, n_mels, sample_rate)
        return banks.to(device=device, dtype=torch.float32)


def _as_batch(audio: Tensor) -> Tensor:
    """[B,1,S] or [B,S] (or [S]) -> [B,S] float32."""
    if audio.dim() == 3 and audio.shape[1] == 1:
        audio = audio[:, 0]
    elif audio.dim() == 1:
        audio = audio[None]
    if audio.dim() != 2:
        raise ValueError(f"expected mono audio [B, 1, S] or [B, S], got {tuple(audio.shape)}")
    return audio.float()


def _crop_pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    length = min(a.shape[-1], b.shape[-1])
    return a[..., :length], b[..., :length]


def _magnitude(audio: Tensor, n_fft: int) -> Tensor:
    """STFT magnitude [B, F, frames], hop n_fft/4, Hann; sqrt(power + eps) keeps grads finite."""
    # Zero (not reflect) padding so clips shorter than n_fft/2 still work.
    spec = torch.stft(
        audio,
        n_fft,
        hop_length=n_fft // 4,
        win_length=n_fft,
        window=_hann_window(n_fft, audio.device),
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    power = spec.real.square() + spec.imag.square()
    return torch.sqrt(power + EPS)


def multi_resolution_stft_distance(
    a: Tensor, b: Tensor, fft_sizes: tuple[int, ...] = STFT_SIZES
) -> Tensor:
    """Per-item [B] distance of a to reference b: mean over FFT sizes of
    spectral convergence ||A|-|B||_F / ||B||_F + mean |log|A| - log|B||."""
    with no_autocast(a.device):
        a, b = _crop_pair(_as_batch(a), _as_batch(b))
        total = a.new_zeros(a.shape[0])
        for n_fft in fft_sizes:
            mag_a, mag_b = _magnitude(a, n_fft), _magnitude(b, n_fft)
            # vector_norm's backward is defined (0) at a zero difference.
            diff_norm = torch.linalg.vector_norm(mag_a - mag_b, dim=(1, 2))
            ref_norm = torch.linalg.vector_norm(mag_b, dim=(1, 2))
            convergence = diff_norm / (ref_norm + EPS)
            log_l1 = (mag_a.log() - mag_b.log()).abs().mean(dim=(1, 2))
            total = total + convergence + log_l1
        return total / len(fft_sizes)


def multi_resolution_mel_distance(
    a: Tensor,
    b: Tensor,
    resolutions: tuple[tuple[int, int], ...] = MEL_RESOLUTIONS,
    sample_rate: int = SAMPLE_RATE,
) -> Tensor:
    """Per-item [B] mean over (n_fft, n_mels) of the L1 distance of log-mel magnitudes."""
    with no_autocast(a.device):
        a, b = _crop_pair(_as_batch(a), _as_batch(b))
        total = a.new_zeros(a.shape[0])
        for n_fft, n_mels in resolutions:
            banks = _mel_filterbank(n_fft, n_mels, sample_rate, a.device)
            mel_a = torch.matmul(_magnitude(a, n_fft).transpose(1, 2), banks)
            mel_b = torch.matmul(_magnitude(b, n_fft).transpose(1, 2), banks)
            total = total + ((mel_a + EPS).log() - (mel_b + EPS).log()).abs().mean(dim=(1, 2))
        return total / len(resolutions)


def si_sdr(estimate: Tensor, reference: Tensor, eps: float = EPS) -> Tensor:
    """Scale-invariant SDR in dB per item [B] (zero-mean signals, Le Roux et al. 2019)."""
    with no_autocast(estimate.device):
        estimate, reference = _crop_pair(_as_batch(estimate), _as_batch(reference))
        estimate = estimate - estimate.mean(dim=-1, keepdim=True)
        reference = reference - reference.mean(dim=-1, keepdim=True)
        scale = (estimate * reference).sum(-1, keepdim=True) / (
            reference.square().sum(-1, keepdim=True) + eps
        )
        target = scale * reference
        noise = estimate - target
        ratio = (target.square().sum(-1) + eps) / (noise.square().sum(-1) + eps)
        return 10.0 * torch.log10(ratio)


def rms_distance(a: Tensor, b: Tensor) -> Tensor:
    """sqrt(mean((a-b)^2) + eps) over everything (a scalar); eps keeps the gradient finite at 0."""
    return torch.sqrt((a.float() - b.float()).square().mean() + RMS_EPS)


def latent_spectral_distance(a: Tensor, b: Tensor, pools: tuple[int, ...] = LATENT_POOLS) -> Tensor:
    """Scalar L1 of log RMS-magnitudes of latents [B,D,T], averaged over temporal poolings."""
    a, b = a.float(), b.float()
    total = a.new_zeros(())
    for pool in pools:
        size = min(pool, a.shape[-1])
        # Pool energy (not signed values) so opposite-sign frames don't cancel.
        energy_a = F.avg_pool1d(a.square(), size, size, ceil_mode=True)
        energy_b = F.avg_pool1d(b.square(), size, size, ceil_mode=True)
        total = total + 0.5 * ((energy_a + EPS).log() - (energy_b + EPS).log()).abs().mean()
    return total / len(pools)


class ReconstructionLoss(nn.Module):
    """Weighted reconstruction loss.

    audio domain: the output latent is decoded (with grad), cropped to the audio length and
    compared with the given input/target audio (inputs and targets are never decoded).
    latent domain: RMS terms on latents, spectral = log-magnitude L1 at several temporal
    poolings; mel is not available there (its weight must be 0).
    Returns (total, terms) where terms holds the detached computed terms only.
    """

    def __init__(
        self,
        codec: Codec,
        loss_domain: str = "audio",
        weights: LossWeights | None = None,
        stft_sizes: tuple[int, ...] = STFT_SIZES,
        mel_resolutions: tuple[tuple[int, int], ...] = MEL_RESOLUTIONS,
        latent_pools: tuple[int, ...] = LATENT_POOLS,
    ):
        super().__init__()
        weights = weights if weights is not None else LossWeights()
        if loss_domain not in LOSS_DOMAINS:
            raise ValueError(f"loss_domain must be one of {LOSS_DOMAINS}, got {loss_domain!r}")
        values = asdict(weights)
        negative = [name for name, value in values.items() if value < 0]
        if negative:
            raise ValueError(f"loss weights must be >= 0: {', '.join(negative)}")
        if not any(values.values()):
            raise ValueError("all loss weights are 0: nothing to optimise")
        if loss_domain == "latent" and weights.mel > 0:
            raise ValueError(
                "the mel loss needs audio: set the mel weight to 0 with "
                "loss_domain='latent', or use loss_domain='audio'"
            )
        self.codec = codec
        self.loss_domain = loss_domain
        self.weights = weights
        self.stft_sizes = tuple(stft_sizes)
        self.mel_resolutions = tuple(mel_resolutions)
        self.latent_pools = tuple(latent_pools)

    def forward(
        self,
        output_latent: Tensor,
        input_latent: Tensor,
        target_latent: Tensor,
        input_audio: Tensor | None = None,
        target_audio: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        with no_autocast(output_latent.device):
            if self.loss_domain == "latent":
                terms = self._latent_terms(output_latent, input_latent, target_latent)
            else:
                terms = self._audio_terms(output_latent, input_audio, target_audio)
            weight_of = {
                "rms_input": self.weights.input,
                "rms_target": self.weights.target,
                "spectral": self.weights.spectral,
                "mel": self.weights.mel,
            }
            total = sum(weight_of[name] * value for name, value in terms.items())
        return total, {name: value.detach() for name, value in terms.items()}

    def _latent_terms(self, output: Tensor, inputs: Tensor, target: Tensor) -> dict[str, Tensor]:
        terms: dict[str, Tensor] = {}
        if self.weights.input > 0:
            terms["rms_input"] = rms_distance(output, inputs)
        if self.weights.target > 0:
            terms["rms_target"] = rms_distance(output, target)
        if self.weights.spectral > 0:
            terms["spectral"] = latent_spectral_distance(output, target, self.latent_pools)
        return terms

    def _audio_terms(
        self, output_latent: Tensor, input_audio: Tensor | None, target_audio: Tensor | None
    ) -> dict[str, Tensor]:
        needs_target = self.weights.target > 0 or self.weights.spectral > 0 or self.weights.mel > 0
        if self.weights.input > 0 and input_audio is None:
            raise ValueError("loss_domain='audio' with an input weight > 0 needs input_audio")
        if needs_target and target_audio is None:
            raise ValueError(
                "loss_domain='audio' needs target_audio for the target, spectral and mel terms"
            )
        decoded = self.codec.decode(output_latent.float()).float()
        terms: dict[str, Tensor] = {}
        if self.weights.input > 0:
            terms["rms_input"] = rms_distance(*_crop_pair(decoded, input_audio))
        if needs_target:
            out, target = _crop_pair(decoded, target_audio)
            if self.weights.target > 0:
                terms["rms_target"] = rms_distance(out, target)
            if self.weights.spectral > 0:
                terms["spectral"] = multi_resolution_stft_distance(
                    out, target, self.stft_sizes
                ).mean()
            if self.weights.mel > 0:
                terms["mel"] = multi_resolution_mel_distance(
                    out, target, self.mel_resolutions, self.codec.sample_rate
                ).mean()
        return terms


def owned_reference(
    input_latent: Tensor, target_latent: Tensor, input_mask: Tensor, target_mask: Tensor
) -> Tensor:
    """Each song in the cells it owns: input_latent * input_mask + target_latent * target_mask.

    The masks are detached: the reference says what to reproduce for the masks the agent chose,
    it must not reward a choice for being easy to reproduce.
    """
    return input_latent.float() * input_mask.detach().float() + target_latent.float() * (
        target_mask.detach().float()
    )


@dataclass
class LossBreakdown:
    """One training or validation loss, assembled by ``TrainingLoss``.

    ``total`` is what backward() sees. ``terms`` holds every named term, detached: the
    reconstruction terms (rms_input, rms_target, spectral, mel), ``reconstruction`` (their
    weighted sum), ``mask_reg_loss`` (the agent's regularizer), ``gen_loss`` (adversarial) and
    ``loss`` = reconstruction + mask_reg_weight * mask_reg_loss, the figure that validation,
    the best checkpoint and early stopping compare (the adversarial term changes with the
    discriminator, so it is left out of it).
    """

    total: Tensor
    terms: dict[str, Tensor]


class TrainingLoss(nn.Module):
    """The whole objective in one place:

        total = reconstruction + mask_reg_weight * mask_reg_loss + gan_weight * gen_loss

    ``objective`` says what reconstruction compares the output with: ``continuation``, the
    target song (and the input's loudness); ``arrangement``, both songs, each reproduced where
    the masks give it the lead (``owned_reference``; in the audio domain its decoded audio).

    ``gen_loss`` is how far ``discriminator`` (when given, with gan_weight > 0) is from calling
    the output real. It runs on detached copies of the discriminator's weights, so the
    generator's backward reaches the output and stops there.
    """

    def __init__(
        self,
        reconstruction: ReconstructionLoss,
        mask_reg_weight: float,
        gan_weight: float = 0.0,
        discriminator: nn.Module | None = None,
        precision: str = "fp32",
        objective: str = "continuation",
    ):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if gan_weight > 0 and discriminator is None:
            raise ValueError("gan_weight > 0 needs a discriminator")
        self.reconstruction = reconstruction
        self.mask_reg_weight = float(mask_reg_weight)
        self.gan_weight = float(gan_weight)
        self.discriminator = discriminator if gan_weight > 0 else None
        self.precision = precision
        self.objective = objective

    def forward(
        self,
        output: Tensor,
        batch: dict[str, Tensor],
        mask_reg_loss: Tensor | None,
        adversarial: bool = True,
        masks: tuple[Tensor, Tensor] | None = None,
    ) -> LossBreakdown:
        """``adversarial=False`` leaves the adversarial term out (validation). ``masks``
        (input_mask, target_mask) are the ones the model applied; the arrangement objective
        needs them."""
        output = output.float()
        reference_latent, reference_audio = self.reference(batch, masks)
        reconstruction, terms = self.reconstruction(
            output,
            batch["input_latent"],
            reference_latent,
            batch.get("input_audio"),
            reference_audio,
        )
        named = {"reconstruction": reconstruction.detach(), **terms}
        objective = reconstruction
        if mask_reg_loss is not None:
            mask_reg_loss = mask_reg_loss.float()
            objective = objective + self.mask_reg_weight * mask_reg_loss
            named["mask_reg_loss"] = mask_reg_loss.detach()
        named["loss"] = objective.detach()
        total = objective
        if adversarial and self.discriminator is not None:
            gen_loss = self.generator_loss(output)
            total = total + self.gan_weight * gen_loss
            named["gen_loss"] = gen_loss.detach()
        return LossBreakdown(total=total, terms=named)

    def reference(
        self, batch: dict[str, Tensor], masks: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, Tensor | None]:
        """(reference latents, reference audio or None) that reconstruction compares with."""
        if self.objective == "continuation":
            return batch["target_latent"], batch.get("target_audio")
        if masks is None:
            raise ValueError(
                "the arrangement objective needs the masks the model applied: train with "
                "the creative agent or a --mask_type"
            )
        latent = owned_reference(batch["input_latent"], batch["target_latent"], *masks)
        if self.reconstruction.loss_domain == "latent":
            return latent, None
        codec = self.reconstruction.codec
        with torch.no_grad(), no_autocast(latent.device):
            audio = codec.decode(latent).float()
        target_audio = batch.get("target_audio")
        if target_audio is not None:
            audio = audio[..., : target_audio.shape[-1]]
        return latent, audio

    def generator_loss(self, output: Tensor) -> Tensor:
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        with autocast_for(output.device, self.precision):
            logits = torch.func.functional_call(self.discriminator, frozen, (output,))
        return adversarial_bce(logits, is_real=True)
