"""The creative agent: a learned mask generator and a style discriminator.

Given the latents of two songs (`encoded_input`, `encoded_target`, both [B, D, T]), the
`AttentionMaskGenerator` decides, for every band and window of a `band_layout.BandLayout` (24 mel
bands x 48 ms for the MDCT codec), which song keeps it. Deciding per cell let the agent learn a
comb of alternating frequency bins: complementary cell by cell, yet both songs audible in every
band (a blend). Per band-window a comb cannot be expressed.

Why the default generator is *competitive* (``shared_weights=True``): in the seed's design two
independent analyzers and two independent sigmoid heads are regularized towards complementary,
covering and balanced masks. A per-channel bias in one head already satisfies that regularizer, so
training collapses within a few dozen steps to a static split of channels (a fixed frequency mask in
disguise: complementarity 1.0, both diversities 0). Here each song's *claim* on a cell is scored by
the same analyzer, the same cross-attention (each song querying the other) and the same claim head,
and the input keeps a band-window with probability
``sigmoid((claim_input - claim_target) / temperature)``, the claims pooled over the band-window.
Anything that does not depend on the songs' content (biases, channel priors) cancels in the
difference, so the masks can only be a function of what differs between the two songs: they are
adaptive per pair and per moment by construction, and swapping the songs swaps the masks.
``shared_weights=False`` keeps the seed's literal design for comparison.

Run ``python creative_agent.py`` for a self-test on random latents.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from songweave.audio.band_layout import BandLayout, describe_layout, split_at_median
from songweave.audio.codecs import SAMPLE_RATE
from songweave.model.config import BALANCE_MODES
from songweave.model.mask_metrics import band_mask_statistics, loudness_difference, mask_statistics

# How the competitive agent keeps the two songs balanced: "median" splits every pair's
# band-windows half and half by construction (`split_at_median`); "penalty" leaves the split free
# and relies on the regularizer's balance term alone (the earlier behaviour).


class CrossAttention(nn.Module):
    """Multi-head attention of `query` frames over `context` frames ([B, T, H] tensors).

    Uses PyTorch's fused scaled-dot-product path; the attention map is only materialized when
    `need_weights=True` (for plots), never during training.
    """

    def __init__(self, hidden_dim: int, num_heads: int):
        super().__init__()
        if hidden_dim % num_heads != 0:
            raise ValueError(
                f"hidden_dim ({hidden_dim}) must be divisible by num_heads ({num_heads})"
            )
        self.num_heads = num_heads
        self.query = nn.Linear(hidden_dim, hidden_dim)
        self.key_value = nn.Linear(hidden_dim, 2 * hidden_dim)
        self.output = nn.Linear(hidden_dim, hidden_dim)

    def _split_heads(self, x: Tensor) -> Tensor:
        batch, frames, hidden = x.shape
        return x.view(batch, frames, self.num_heads, hidden // self.num_heads).transpose(1, 2)

    def forward(
        self, query: Tensor, context: Tensor, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        q = self._split_heads(self.query(query))
        k, v = (self._split_heads(t) for t in self.key_value(context).chunk(2, dim=-1))
        weights = None
        if need_weights:
            weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
            attended = weights @ v
            weights = weights.mean(dim=1)  # average over heads: [B, T_query, T_context]
        else:
            attended = F.scaled_dot_product_attention(q, k, v)
        attended = attended.transpose(1, 2).flatten(2)
        return self.output(attended), weights


def _analyzer(encoding_dim: int, hidden_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(encoding_dim, hidden_dim, kernel_size=3, padding=1),
        nn.GELU(),
        nn.Conv1d(hidden_dim, hidden_dim, kernel_size=3, padding=1),
    )


def _mask_head(hidden_dim: int, encoding_dim: int, bias: bool = True) -> nn.Sequential:
    # Reads the song's own features next to what it attended to in the other song.
    return nn.Sequential(
        nn.Conv1d(2 * hidden_dim, hidden_dim, kernel_size=3, padding=1),
        nn.GELU(),
        nn.Conv1d(hidden_dim, encoding_dim, kernel_size=1, bias=bias),
    )


def straight_through_hard(soft_mask: Tensor) -> Tensor:
    """Binary mask in the forward pass, the soft mask's gradient in the backward pass."""
    hard_mask = (soft_mask > 0.5).to(soft_mask.dtype)
    return hard_mask + (soft_mask - soft_mask.detach())


def expected_switches(band_mask: Tensor) -> Tensor:
    """Mean over B, W of the expected owner changes across frequency of band masks [B, K, W].

    Reading m[k] as the probability that the input owns band k, two neighbours differ with
    probability m[k] + m[k + 1] - 2 m[k] m[k + 1]. For binary masks that is |m[k + 1] - m[k]|, the
    `band_switches` figure; unlike it, a 50/50 blend costs half a switch per band edge rather than
    none, so charging switches pushes bands towards their neighbour's owner and never towards a
    blend.
    """
    if band_mask.shape[1] < 2:
        return band_mask.new_zeros(())
    lower, upper = band_mask[:, :-1], band_mask[:, 1:]
    return (lower + upper - 2.0 * lower * upper).sum(dim=1).mean()


@dataclass
class MaskDecision:
    """What the mask generator decided for one pair of latents.

    input_mask, target_mask: [B, D, T] in [0, 1] (with gradient); reg_loss: 0-d regularizer (with
    gradient; None only for masks that have no regularizer, i.e. fixed strategies); terms: the
    regularizer's parts as detached 0-d tensors; attention: [B, T, T] cross-attention of the input
    querying the target (head average), only when asked for (need_weights=True).
    """

    input_mask: Tensor
    target_mask: Tensor
    reg_loss: Tensor | None
    terms: dict[str, Tensor] = field(default_factory=dict)
    attention: Tensor | None = None


class AttentionMaskGenerator(nn.Module):
    """Cross-attention mask generator that decides per band and window, not per latent cell.

    Claims are scored per cell [B, D, T] (analyzers, cross-attention, claim head), pooled with the
    `BandLayout` to band-windows [B, K, W] (mean over a band's channels and a window's frames),
    turned into band masks there and spread back to [B, D, T] with the layout's short crossfades
    between windows. A mask is therefore constant within a band-window (up to the crossfades): a
    comb of alternating bins, which keeps both songs audible in every band, cannot be produced.

    The regularizer works on the band masks m_in, m_tg [B, K, W], the units the band figures of
    `mask_metrics` measure:
    reg_loss = complementarity_weight * mean(m_in * m_tg)
             + coverage_weight * mean((m_in + m_tg - 1)^2)
             + balance_weight * ((mean(m_in) - 0.5)^2 + (mean(m_tg) - 0.5)^2)
             - temporal_diversity_weight * temporal_diversity
             + switch_weight * switches
    where temporal_diversity is the mean over B, K of the variance over windows of the band masks
    (at most 0.25, so the reward is bounded) and switches the expected owner changes across
    frequency per window (`expected_switches`; for binary masks the `band_switches` figure: 1 for a
    low/high split, about K - 1 for a comb of alternating bands, which keeps both songs audible in
    every octave). With
    balance="median" (the default of the competitive design) each pair's claim differences are
    first shifted to a zero median (`split_at_median`), so the balance is half and half by
    construction and the balance term stays near 0.
    switch_weight=0.2 was chosen on held-out training songs (14 epochs of the real-music recipe,
    0 / 0.2 / 0.5, with the cost on |m[k + 1] - m[k]|, which equals the expected count for binary
    masks): at 0 the agent left 7.3 owner changes per window (stripes inside its split), at 0.2
    1.2 (a register split) with the lowest MR-STFT distance, at 0.5 under 1 (whole windows, a
    temporal split) with a worse one. That first form let soft masks escape into a blend (at 1.0
    the demo's masks stayed at 0.5), which the expected count does not.
    loudness_prior != 0 adds `loudness_scale * (log P(z_in^2) - log P(z_tg^2))` to every band
    claim difference, `loudness_scale` a learned scalar starting at the prior: the agent then
    starts from the zero-parameter rule "the louder song keeps the band-window" (`band_energy`,
    balanced by the median split) and learns where to depart from it. The loudness difference
    is antisymmetric, so swapping the songs still swaps the masks.
    `decide` returns the masks with these terms and (on
    request) the attention map; `forward` returns the seed's tuple.
    """

    def __init__(
        self,
        encoding_dim: int,
        hidden_dim: int = 256,
        num_heads: int = 4,
        complementarity_weight: float = 10.0,
        coverage_weight: float = 10.0,
        balance_weight: float = 10.0,
        temporal_diversity_weight: float = 5.0,
        switch_weight: float = 0.2,
        temperature: float = 0.1,
        shared_weights: bool = True,
        feature_floor: float = 0.01,
        layout: BandLayout | None = None,
        balance: str | None = None,
        loudness_prior: float = 0.0,
    ):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if loudness_prior != 0.0 and not shared_weights:
            raise ValueError("loudness_prior needs shared_weights=True (one claim difference)")
        if balance is None:
            balance = "median" if shared_weights else "penalty"
        if balance not in BALANCE_MODES:
            raise ValueError(
                f"unknown balance {balance!r}; choose one of {', '.join(BALANCE_MODES)}"
            )
        if balance == "median" and not shared_weights:
            raise ValueError("balance='median' needs shared_weights=True (one claim difference)")
        # Default: the MDCT codec's mel bands (channels = frequency bins at 24 kHz).
        layout = layout if layout is not None else BandLayout.mel(encoding_dim, SAMPLE_RATE)
        if layout.dim != encoding_dim:
            raise ValueError(
                f"the mask layout covers {layout.dim} channels, the latents have {encoding_dim}"
            )
        self.encoding_dim = encoding_dim
        self.layout = layout
        self.complementarity_weight = complementarity_weight
        self.coverage_weight = coverage_weight
        self.balance_weight = balance_weight
        self.temporal_diversity_weight = temporal_diversity_weight
        self.switch_weight = switch_weight
        self.temperature = temperature
        self.shared_weights = shared_weights
        self.feature_floor = feature_floor
        self.balance = balance

        self.input_analyzer = _analyzer(encoding_dim, hidden_dim)
        self.input_queries_target = CrossAttention(hidden_dim, num_heads)
        # A shared head's last bias would cancel in the claim difference: leave it out.
        self.input_mask_head = _mask_head(hidden_dim, encoding_dim, bias=not shared_weights)
        if shared_weights:
            self.target_analyzer = self.input_analyzer
            self.target_queries_input = self.input_queries_target
            self.target_mask_head = self.input_mask_head
        else:
            self.target_analyzer = _analyzer(encoding_dim, hidden_dim)
            self.target_queries_input = CrossAttention(hidden_dim, num_heads)
            self.target_mask_head = _mask_head(hidden_dim, encoding_dim)
        # Learned weight of the loudness difference in the band claims; absent when the prior is
        # 0, so that the parameters (and checkpoints) are those of an agent without it.
        self.loudness_scale = (
            nn.Parameter(torch.tensor(float(loudness_prior))) if loudness_prior != 0.0 else None
        )

    def compress(self, latents: Tensor) -> Tensor:
        """Log magnitude of the latents, the analyzers' input.

        Music latents span several decades (loud low bands, quiet high ones), and which song
        should keep a cell depends on relative level, not on linear size. The sign is dropped:
        for the MDCT codec it is phase-like and flips from frame to frame, and a mask that
        followed it would look adaptive while only following noise.
        """
        return torch.log1p(latents.abs() / self.feature_floor)

    def claims(
        self, encoded_input: Tensor, encoded_target: Tensor, need_weights: bool = False
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Per-cell claim logits [B, D, T] of the input and of the target song, and the detached
        attention map [B, T, T] of the input querying the target when need_weights=True."""
        if encoded_input.shape != encoded_target.shape:
            raise ValueError(
                f"input and target latents differ in shape: {tuple(encoded_input.shape)} vs "
                f"{tuple(encoded_target.shape)}"
            )
        if encoded_input.dim() != 3 or encoded_input.shape[1] != self.encoding_dim:
            raise ValueError(
                f"expected latents [B, {self.encoding_dim}, T], got {tuple(encoded_input.shape)}"
            )
        # Features [B, T, H].
        input_features = self.input_analyzer(self.compress(encoded_input)).transpose(1, 2)
        target_features = self.target_analyzer(self.compress(encoded_target)).transpose(1, 2)
        input_attended, attention = self.input_queries_target(
            input_features, target_features, need_weights
        )
        target_attended, _ = self.target_queries_input(target_features, input_features)
        input_claim = self.input_mask_head(
            torch.cat([input_features, input_attended], dim=-1).transpose(1, 2)
        )
        target_claim = self.target_mask_head(
            torch.cat([target_features, target_attended], dim=-1).transpose(1, 2)
        )
        attention = attention.detach() if attention is not None else None
        return input_claim, target_claim, attention

    def forward(
        self, encoded_input: Tensor, encoded_target: Tensor, hard: bool = False
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Seed API: (input_mask, target_mask, reg_loss); see `decide`."""
        decision = self.decide(encoded_input, encoded_target, hard=hard)
        return decision.input_mask, decision.target_mask, decision.reg_loss

    def decide(
        self,
        encoded_input: Tensor,
        encoded_target: Tensor,
        hard: bool = False,
        need_weights: bool = False,
    ) -> MaskDecision:
        """Masks, regularizer and its terms (and the attention map if need_weights) for a pair.

        hard=True: binary band masks in the forward pass (straight-through gradient of the soft
        band masks), still crossfaded between windows when spread to cells.
        """
        input_claim, target_claim, attention = self.claims(
            encoded_input, encoded_target, need_weights
        )
        pool = self.layout.pool
        if self.shared_weights:
            # Pooling is linear: pooling the difference is the difference of the band claims.
            band_claim = pool(input_claim - target_claim, drop_incomplete=False)
            if self.loudness_scale is not None:
                band_claim = band_claim + self.loudness_scale * loudness_difference(
                    encoded_input, encoded_target, self.layout, drop_incomplete=False
                )
            if self.balance == "median":
                band_claim = split_at_median(band_claim)
            band_input = torch.sigmoid(band_claim / self.temperature)
            band_target = 1.0 - band_input
        else:
            band_input = torch.sigmoid(pool(input_claim, drop_incomplete=False) / self.temperature)
            band_target = torch.sigmoid(
                pool(target_claim, drop_incomplete=False) / self.temperature
            )
        if hard:
            band_input = straight_through_hard(band_input)
            band_target = 1.0 - band_input
        reg_loss, terms = self.regularization(band_input, band_target)
        num_frames = encoded_input.shape[-1]
        input_mask = self.layout.spread(band_input, num_frames)
        target_mask = self.layout.spread(band_target, num_frames)
        return MaskDecision(input_mask, target_mask, reg_loss, terms, attention)

    def regularization(
        self, input_mask: Tensor, target_mask: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """(reg_loss with gradient, its terms as detached 0-d tensors), for masks [B, K, W]."""
        # In fp32 so that the squared means stay accurate under bf16 autocast.
        input_mask, target_mask = input_mask.float(), target_mask.float()
        overlap = (input_mask * target_mask).mean()
        coverage_error = ((input_mask + target_mask - 1.0) ** 2).mean()
        imbalance = (input_mask.mean() - 0.5) ** 2 + (target_mask.mean() - 0.5) ** 2
        temporal_diversity = 0.5 * (
            input_mask.var(dim=-1, unbiased=False).mean()
            + target_mask.var(dim=-1, unbiased=False).mean()
        )
        switches = expected_switches(input_mask)
        reg_loss = (
            self.complementarity_weight * overlap
            + self.coverage_weight * coverage_error
            + self.balance_weight * imbalance
            - self.temporal_diversity_weight * temporal_diversity
            + self.switch_weight * switches
        )
        terms = {
            "overlap": overlap.detach(),
            "coverage_error": coverage_error.detach(),
            "imbalance": imbalance.detach(),
            "temporal_diversity": temporal_diversity.detach(),
            "switches": switches.detach(),
            "reg_loss": reg_loss.detach(),
        }
        return reg_loss, terms


class StyleDiscriminator(nn.Module):
    """Judges whether a latent pattern [B, D, T] looks like real music (logits, autocast-safe).

    A strided Conv1d encoder (/8 in time) feeds a real/fake head on the frame features and a style
    head on the per-channel mean and standard deviation of those features.
    """

    def __init__(self, encoding_dim: int, hidden_dim: int = 256):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv1d(encoding_dim, hidden_dim // 2, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv1d(hidden_dim // 2, hidden_dim, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv1d(hidden_dim, hidden_dim, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        )
        self.real_fake_head = nn.Conv1d(hidden_dim, 1, kernel_size=3, padding=1)
        self.style_head = nn.Sequential(
            nn.Linear(2 * hidden_dim, hidden_dim // 2),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden_dim // 2, 1),
        )

    def forward(self, pattern: Tensor) -> tuple[Tensor, Tensor]:
        """Return (real_fake_logit [B], style_logit [B])."""
        features = self.encoder(pattern)
        real_fake_logit = self.real_fake_head(features).mean(dim=(1, 2))
        # Statistics in fp32: a variance in bf16 loses most of its digits.
        features = features.float()
        statistics = torch.cat(
            [features.mean(dim=-1), features.std(dim=-1, unbiased=False)], dim=-1
        )
        style_logit = self.style_head(statistics.to(self.style_head[0].weight.dtype)).squeeze(-1)
        return real_fake_logit, style_logit


def adversarial_bce(logits: tuple[Tensor, ...], is_real: bool) -> Tensor:
    """Binary cross-entropy of every discriminator head against one label, summed, in fp32."""
    total = torch.zeros((), device=logits[0].device)
    for logit in logits:
        logit = logit.float()
        total = total + F.binary_cross_entropy_with_logits(
            logit, torch.full_like(logit, 1.0 if is_real else 0.0)
        )
    return total


class CreativeAgent(nn.Module):
    """The mask generator plus (optionally) the style discriminator."""

    def __init__(
        self,
        encoding_dim: int,
        use_discriminator: bool = True,
        hidden_dim: int = 256,
        num_heads: int = 4,
        **mask_options,
    ):
        super().__init__()
        self.mask_generator = AttentionMaskGenerator(
            encoding_dim, hidden_dim, num_heads, **mask_options
        )
        self.discriminator = (
            StyleDiscriminator(encoding_dim, hidden_dim) if use_discriminator else None
        )

    def generate_creative_masks(
        self, encoded_input: Tensor, encoded_target: Tensor, hard: bool = False
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Return (masked_input, masked_target, reg_loss)."""
        input_mask, target_mask, reg_loss = self.mask_generator(
            encoded_input, encoded_target, hard=hard
        )
        return encoded_input * input_mask, encoded_target * target_mask, reg_loss

    def _require_discriminator(self) -> StyleDiscriminator:
        if self.discriminator is None:
            raise RuntimeError(
                "this CreativeAgent was built with use_discriminator=False; build it with "
                "use_discriminator=True for adversarial training"
            )
        return self.discriminator

    def judge_quality(self, pattern: Tensor) -> tuple[Tensor, Tensor]:
        """Return (real_fake_score, style_score) as probabilities [B]."""
        real_fake_logit, style_logit = self._require_discriminator()(pattern)
        return torch.sigmoid(real_fake_logit.float()), torch.sigmoid(style_logit.float())

    def adversarial_loss(self, fake: Tensor, real: Tensor) -> tuple[Tensor, Tensor]:
        """Return (generator_loss, discriminator_loss), non-saturating GAN losses on logits.

        The discriminator loss sees `fake` detached, so it trains the discriminator only; the
        generator loss flows into whatever produced `fake`.
        """
        discriminator = self._require_discriminator()
        generator_loss = adversarial_bce(discriminator(fake), is_real=True)
        discriminator_loss = adversarial_bce(discriminator(real), is_real=True) + adversarial_bce(
            discriminator(fake.detach()), is_real=False
        )
        return generator_loss, discriminator_loss


def count_parameters(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def self_test(
    agent: CreativeAgent | None = None,
    batch: int = 4,
    encoding_dim: int = 128,
    frames: int = 300,
    seed: int = 0,
) -> list[str]:
    """Run the checks of `python creative_agent.py`; print the figures, return the failures."""
    torch.manual_seed(seed)
    agent = agent if agent is not None else CreativeAgent(encoding_dim, use_discriminator=True)
    encoding_dim = agent.mask_generator.encoding_dim
    encoded_input = torch.randn(batch, encoding_dim, frames)
    encoded_target = torch.randn(batch, encoding_dim, frames)
    failures: list[str] = []

    def check(condition: bool, message: str) -> None:
        if not condition:
            failures.append(message)

    print(
        f"Parameters: mask generator {count_parameters(agent.mask_generator):,}, "
        f"discriminator {count_parameters(agent.discriminator):,}, "
        f"total {count_parameters(agent):,}"
    )

    generator = agent.mask_generator
    input_mask, target_mask, reg_loss = generator(encoded_input, encoded_target)
    stats = mask_statistics(input_mask, target_mask)
    band_stats = band_mask_statistics(input_mask, target_mask, generator.layout)
    print(f"Mask layout: {describe_layout(generator.layout)}")
    print(f"Mask regularization loss: {reg_loss.item():.6f}")
    print(
        f"Complementarity: {stats['complementarity'].item() * 100:.1f}% "
        f"(band {band_stats['band_complementarity'].item() * 100:.1f}%; untrained, random latents)"
    )
    print(f"Coverage: {stats['coverage'].item() * 100:.1f}%")
    print(f"Balance: {stats['balance'].item():.3f}")
    expected_shape = (batch, encoding_dim, frames)
    check(
        tuple(input_mask.shape) == expected_shape and tuple(target_mask.shape) == expected_shape,
        f"mask shapes {tuple(input_mask.shape)}, {tuple(target_mask.shape)} != {expected_shape}",
    )
    for name, mask in (("input_mask", input_mask), ("target_mask", target_mask)):
        check(bool(torch.isfinite(mask).all()), f"{name} has non-finite values")
        check(bool(((mask >= 0) & (mask <= 1)).all()), f"{name} leaves [0, 1]")
    check(bool(torch.isfinite(reg_loss)), f"regularization loss is not finite: {reg_loss.item()}")

    masked_input, masked_target, _ = agent.generate_creative_masks(encoded_input, encoded_target)
    check(
        masked_input.shape == encoded_input.shape and masked_target.shape == encoded_target.shape,
        "masked latents change shape",
    )
    total = reg_loss
    if agent.discriminator is not None:
        real_fake_score, style_score = agent.judge_quality(encoded_target)
        print(
            f"Discriminator scores: real/fake {real_fake_score.mean().item():.3f}, "
            f"style {style_score.mean().item():.3f}"
        )
        check(
            tuple(real_fake_score.shape) == (batch,) and tuple(style_score.shape) == (batch,),
            "discriminator scores are not [B]",
        )
        generator_loss, discriminator_loss = agent.adversarial_loss(
            masked_input + masked_target, encoded_target
        )
        print(
            f"Adversarial losses: generator {generator_loss.item():.4f}, "
            f"discriminator {discriminator_loss.item():.4f}"
        )
        for name, value in (
            ("real/fake score", real_fake_score),
            ("style score", style_score),
            ("generator loss", generator_loss),
            ("discriminator loss", discriminator_loss),
        ):
            check(bool(torch.isfinite(value).all()), f"{name} is not finite")
        total = total + generator_loss + discriminator_loss

    agent.zero_grad(set_to_none=True)
    total.backward()
    missing = [name for name, p in agent.named_parameters() if p.grad is None]
    grads = [p.grad for p in agent.parameters() if p.grad is not None]
    grad_norm = (
        torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        if grads
        else torch.tensor(0.0)
    )
    print(f"Gradient norm: {grad_norm.item():.6f}")
    check(not missing, f"parameters without gradient: {', '.join(missing[:5])}")
    check(bool(torch.isfinite(grad_norm)), "gradient norm is not finite")
    return failures


def main() -> int:
    failures = self_test()
    if failures:
        for failure in failures:
            print(f"FAILED: {failure}")
        return 1
    print("All creative agent checks passed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
