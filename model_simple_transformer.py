"""SimpleTransformer: a cascade of transformer stages that combines two songs' latents.

Stage 0 reads concat(input, target) and starts from their (masked) sum; stage k > 0 reads
concat(input, previous output, target) and refines the previous output. With one stage the model
reads the input alone. Masks (the learned creative agent, or a fixed strategy from
`complementary_masking`) are computed once per forward and applied the same way in training,
evaluation and inference; the agent and `band_energy` decide per band-window of `mask_layout`
(see `band_layout`).
`forward(..., return_record=True)` also returns a `ForwardRecord`: the applied masks, their
statistics (`mask_metrics.all_mask_statistics`) and the agent's regularizer terms.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from creative_agent import CreativeAgent, MaskDecision
from songweave.audio.band_layout import LAYOUT_KINDS, BandLayout, build_layout
from songweave.audio.codecs import SAMPLE_RATE
from songweave.model.dropout_masks import compiled_dropout, cpu_dropout
from songweave.model.fixed_masks import MASK_TYPES, complementary_masks
from songweave.model.mask_metrics import all_mask_statistics

# Guards the per-item RMS used to scale the anti-cheating noise on silent targets.
_RMS_EPS = 1e-5


@lru_cache(maxsize=32)
def _sinusoidal_table(
    frames: int, channels: int, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """[frames, channels] sinusoidal positions, computed for any length (no cap) and cached."""
    position = torch.arange(frames, dtype=torch.float32, device=device)[:, None]
    frequency = torch.exp(
        torch.arange(0, channels, 2, dtype=torch.float32, device=device)
        * (-math.log(10000.0) / channels)
    )
    table = torch.zeros(frames, channels, device=device)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: channels // 2])
    return table.to(dtype)


def fast_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """F.dropout(x, p, training): same Bernoulli(1 - p) keep mask and 1 / (1 - p) scaling. On CPU
    the masks come from `dropout_masks` (numpy, seeded from torch's generator): eagerly as a mask
    in x's dtype, one multiply forward and one backward (only a bool mask is kept for it); inside
    torch.compile as a uint8 custom op that inductor fuses. Other devices use F.dropout."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, training)
    if torch.compiler.is_compiling():
        return compiled_dropout(x, p)
    return cpu_dropout(x, p)


class FastDropout(nn.Dropout):
    """nn.Dropout computed by `fast_dropout` (same p, no parameters, same state dict)."""

    def forward(self, x: Tensor) -> Tensor:
        return fast_dropout(x, self.p, self.training)


class EncoderLayer(nn.TransformerEncoderLayer):
    """nn.TransformerEncoderLayer (post-norm, batch_first) with the same parameters, state dict and
    math, computed faster in training:

    - self-attention straight from the packed in-projection ([B, T, 3C] -> heads, no transposes
      to sequence-first layout) through the fused scaled-dot-product kernel, except with attention
      dropout on CPU (no fused kernel there): softmax -> dropout -> values, without the math
      path's extra passes for fully masked rows (no masks are used here);
    - every dropout (attention weights, residual branches, feed-forward) by `fast_dropout`, also
      in torch.compile'd graphs (whose own CPU random numbers are about 30x slower).
    Evaluation without gradients still takes PyTorch's fused inference fast path.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.dropout, self.dropout1, self.dropout2 = (
            FastDropout(m.p) for m in (self.dropout, self.dropout1, self.dropout2)
        )

    def _sa_block(
        self,
        x: Tensor,
        attn_mask: Tensor | None,
        key_padding_mask: Tensor | None,
        is_causal: bool = False,
    ) -> Tensor:
        attention = self.self_attn
        if (
            attn_mask is not None
            or key_padding_mask is not None
            or is_causal
            or not attention._qkv_same_embed_dim
        ):
            return super()._sa_block(x, attn_mask, key_padding_mask, is_causal)
        batch, frames, width = x.shape
        heads = attention.num_heads
        qkv = F.linear(x, attention.in_proj_weight, attention.in_proj_bias)
        q, k, v = (
            qkv.view(batch, frames, 3, heads, width // heads).permute(2, 0, 3, 1, 4).unbind(0)
        )  # [B, H, T, hd]
        p = attention.dropout if self.training else 0.0
        if p > 0.0 and x.device.type == "cpu":
            # PyTorch's fused CPU attention has no dropout; compiled, softmax and mask fuse.
            scores = torch.matmul(q * (1.0 / math.sqrt(width // heads)), k.transpose(-2, -1))
            attended = torch.matmul(fast_dropout(torch.softmax(scores, dim=-1), p, True), v)
        else:  # fused kernels, with their own dropout on GPUs
            attended = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        attended = attended.transpose(1, 2).reshape(batch, frames, width)
        return self.dropout1(attention.out_proj(attended))


class CascadeStage(nn.Module):
    """Positional encoding, LayerNorm, TransformerEncoder, LayerNorm, projection to D, residual."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        nhead: int,
        num_layers: int,
        dropout: float,
        dim_feedforward: int,
        activation_checkpointing: bool = False,
    ):
        super().__init__()
        self.activation_checkpointing = activation_checkpointing
        if in_channels % nhead != 0:
            raise ValueError(
                f"a stage with {in_channels} input channels cannot be split into nhead={nhead} "
                "attention heads"
            )
        self.input_norm = nn.LayerNorm(in_channels)
        layer = EncoderLayer(
            in_channels, nhead, dim_feedforward, dropout, activation="gelu", batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.output_norm = nn.LayerNorm(in_channels)
        self.projection = nn.Linear(in_channels, out_channels)
        # Zero-initialized so that an untrained stage passes its residual through unchanged: the
        # cascade starts exactly at the masked mix of the two songs and learns corrections to it,
        # instead of starting from random noise on top of it.
        nn.init.zeros_(self.projection.weight)
        nn.init.zeros_(self.projection.bias)

    def forward(self, stage_input: Tensor, residual: Tensor) -> Tensor:
        """stage_input [B, C, T], residual [B, D, T] -> [B, D, T]."""
        hidden = stage_input.transpose(1, 2)
        # torch.compile traces the table into the graph itself (it warns about, and ignores, the
        # cache).
        table = (
            _sinusoidal_table.__wrapped__ if torch.compiler.is_compiling() else _sinusoidal_table
        )
        hidden = hidden + table(hidden.shape[1], hidden.shape[2], hidden.device, hidden.dtype)
        hidden = self.input_norm(hidden)
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            # Keep only each layer's input; its activations are recomputed in the backward pass
            # (same dropout masks: the RNG state is replayed), so memory no longer grows with the
            # attention matrices of every layer.
            for layer in self.encoder.layers:
                hidden = checkpoint(layer, hidden, use_reentrant=False)
        else:
            hidden = self.encoder(hidden)
        hidden = self.output_norm(hidden)
        return residual + self.projection(hidden).transpose(1, 2)


@dataclass
class ForwardRecord:
    """What one forward pass did with the masks (for logs, evaluation, plots); all detached.

    input_mask, target_mask: [B or 1, D, T] (1 for content-independent fixed masks), None when
    nothing is masked. statistics: 0-d mask figures (see `mask_metrics.all_mask_statistics`),
    empty when nothing is masked. regularizer_terms: the agent's regularizer parts (empty for
    fixed masks). attention: [B, T, T] agent cross-attention when asked for (need_attention).
    """

    input_mask: Tensor | None = None
    target_mask: Tensor | None = None
    statistics: dict[str, Tensor] = field(default_factory=dict)
    regularizer_terms: dict[str, Tensor] = field(default_factory=dict)
    attention: Tensor | None = None


def resolved_agent_balance(agent_balance: str | None, agent_shared_weights: bool) -> str:
    """The agent's balance mode a model records: None picks "median" for the competitive design;
    the seed's design (two independent heads) has no single claim to split at a median."""
    if agent_balance is not None:
        return agent_balance
    return "median" if agent_shared_weights else "penalty"


class SimpleTransformer(nn.Module):
    def __init__(
        self,
        encoding_dim: int = 128,
        nhead: int = 8,
        num_layers: int = 4,
        dropout: float = 0.1,
        num_transformer_layers: int = 1,
        anti_cheating: float = 0.0,
        use_creative_agent: bool = False,
        mask_type: str = "none",
        dim_feedforward: int = 2048,
        agent_hidden_dim: int = 256,
        agent_temperature: float = 0.1,
        agent_temporal_diversity_weight: float = 5.0,
        agent_switch_weight: float = 0.2,
        agent_shared_weights: bool = True,
        agent_balance: str | None = None,
        agent_loudness_prior: float = 0.0,
        hard_masks: bool = False,
        keep_target_parts: bool = False,
        use_discriminator: bool = False,
        activation_checkpointing: bool = False,
        mask_layout: str = "mel",
        mask_bands: int = 24,
        mask_window_frames: int = 9,
        sample_rate: int = SAMPLE_RATE,
    ):
        super().__init__()
        if num_transformer_layers < 1:
            raise ValueError(
                f"num_transformer_layers must be at least 1, got {num_transformer_layers}"
            )
        if mask_type not in MASK_TYPES:
            raise ValueError(
                f"unknown mask_type {mask_type!r}; choose one of {', '.join(MASK_TYPES)}"
            )
        if use_creative_agent and mask_type != "none":
            raise ValueError(
                f"use either the creative agent or a fixed mask (mask_type={mask_type!r}), not both"
            )
        if (use_creative_agent or mask_type != "none") and num_transformer_layers < 2:
            raise ValueError(
                "masking (creative agent or fixed mask) needs a cascade: "
                "set num_transformer_layers >= 2"
            )
        if anti_cheating < 0:
            raise ValueError(f"anti_cheating must be >= 0, got {anti_cheating}")
        if mask_layout not in LAYOUT_KINDS:
            raise ValueError(
                f"unknown mask_layout {mask_layout!r}; choose one of {', '.join(LAYOUT_KINDS)}"
            )
        agent_balance = resolved_agent_balance(agent_balance, agent_shared_weights)
        self.config = {
            "encoding_dim": encoding_dim,
            "nhead": nhead,
            "num_layers": num_layers,
            "dropout": dropout,
            "num_transformer_layers": num_transformer_layers,
            "anti_cheating": anti_cheating,
            "use_creative_agent": use_creative_agent,
            "mask_type": mask_type,
            "dim_feedforward": dim_feedforward,
            "agent_hidden_dim": agent_hidden_dim,
            "agent_temperature": agent_temperature,
            "agent_temporal_diversity_weight": agent_temporal_diversity_weight,
            "agent_switch_weight": agent_switch_weight,
            "agent_shared_weights": agent_shared_weights,
            "agent_balance": agent_balance,
            "agent_loudness_prior": agent_loudness_prior,
            "hard_masks": hard_masks,
            "keep_target_parts": keep_target_parts,
            "use_discriminator": use_discriminator,
            "activation_checkpointing": activation_checkpointing,
            "mask_layout": mask_layout,
            "mask_bands": mask_bands,
            "mask_window_frames": mask_window_frames,
            "sample_rate": sample_rate,
        }
        self.encoding_dim = encoding_dim
        self.anti_cheating = anti_cheating
        self.mask_type = mask_type
        self.hard_masks = hard_masks
        self.keep_target_parts = keep_target_parts
        # The band-window grid of the masks (agent, band_energy) and of the band figures.
        self.mask_layout: BandLayout = build_layout(
            mask_layout, encoding_dim, sample_rate, mask_bands, mask_window_frames
        )
        self.creative_agent = (
            CreativeAgent(
                encoding_dim,
                use_discriminator=use_discriminator,
                hidden_dim=agent_hidden_dim,
                temperature=agent_temperature,
                temporal_diversity_weight=agent_temporal_diversity_weight,
                switch_weight=agent_switch_weight,
                shared_weights=agent_shared_weights,
                balance=agent_balance,
                layout=self.mask_layout,
                loudness_prior=agent_loudness_prior,
            )
            if use_creative_agent
            else None
        )
        stage_channels = (
            [encoding_dim]
            if num_transformer_layers == 1
            else [2 * encoding_dim] + [3 * encoding_dim] * (num_transformer_layers - 1)
        )
        self.stages = nn.ModuleList(
            CascadeStage(
                c,
                encoding_dim,
                nhead,
                num_layers,
                dropout,
                dim_feedforward,
                activation_checkpointing,
            )
            for c in stage_channels
        )

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def compute_masks(
        self, encoded_input: Tensor, encoded_target: Tensor, need_attention: bool = False
    ) -> MaskDecision | None:
        """The masks for this pair (reg_loss None for fixed masks); None when nothing is masked."""
        if self.creative_agent is not None:
            return self.creative_agent.mask_generator.decide(
                encoded_input, encoded_target, hard=self.hard_masks, need_weights=need_attention
            )
        if self.mask_type != "none":
            input_mask, target_mask = complementary_masks(
                self.mask_type, encoded_input, encoded_target, layout=self.mask_layout
            )
            return MaskDecision(input_mask, target_mask, reg_loss=None)
        return None

    def _with_anti_cheating_noise(self, target: Tensor) -> Tensor:
        if not (self.training and self.anti_cheating > 0):
            return target
        rms = (
            target.detach()
            .float()
            .pow(2)
            .mean(dim=(1, 2), keepdim=True)
            .add(_RMS_EPS**2)
            .sqrt()
            .to(target.dtype)
        )
        return target + self.anti_cheating * rms * torch.randn_like(target)

    def forward(
        self,
        encoded_input: Tensor,
        encoded_target: Tensor | None = None,
        *,
        return_record: bool = False,
        need_attention: bool = False,
    ) -> tuple[Tensor, Tensor | None] | tuple[Tensor, Tensor | None, ForwardRecord]:
        """(output latents [B, D, T], mask_reg_loss or None), plus a ForwardRecord when
        return_record=True. The record's statistics are only computed when it is asked for (its
        band figures need at least mask_window_frames frames); need_attention=True (with
        return_record) adds the agent's attention map."""
        if encoded_input.dim() != 3 or encoded_input.shape[1] != self.encoding_dim:
            raise ValueError(
                f"expected input latents [B, {self.encoding_dim}, T], "
                f"got {tuple(encoded_input.shape)}"
            )
        if self.num_stages == 1:
            output = self.stages[0](encoded_input, encoded_input)
            return (output, None, ForwardRecord()) if return_record else (output, None)
        if encoded_target is None:
            raise ValueError("a cascade model (num_transformer_layers >= 2) needs encoded_target")
        if encoded_target.shape != encoded_input.shape:
            raise ValueError(
                f"input and target latents differ in shape: {tuple(encoded_input.shape)} vs "
                f"{tuple(encoded_target.shape)}"
            )

        decision = self.compute_masks(
            encoded_input, encoded_target, need_attention and return_record
        )
        record = ForwardRecord() if return_record else None
        mask_reg_loss = None
        if decision is not None:
            mask_reg_loss = decision.reg_loss
            if record is not None:
                record = self._record(decision, encoded_input, encoded_target)
            encoded_input = encoded_input * decision.input_mask
            encoded_target = encoded_target * decision.target_mask

        masked_mix = encoded_input + encoded_target
        output = self.stages[0](torch.cat([encoded_input, encoded_target], dim=1), masked_mix)
        for stage in self.stages[1:]:
            noisy_target = self._with_anti_cheating_noise(encoded_target)
            output = stage(torch.cat([encoded_input, output, noisy_target], dim=1), output)
        if decision is not None and self.keep_target_parts:
            # Where the target keeps its part the masked mix already holds it exactly: any change
            # there can only move the output away from it. The cascade rewrites the rest.
            output = masked_mix + (output - masked_mix) * (1.0 - decision.target_mask)
        return (output, mask_reg_loss, record) if record is not None else (output, mask_reg_loss)

    def _record(
        self, decision: MaskDecision, encoded_input: Tensor, encoded_target: Tensor
    ) -> ForwardRecord:
        input_mask, target_mask = decision.input_mask.detach(), decision.target_mask.detach()
        return ForwardRecord(
            input_mask=input_mask,
            target_mask=target_mask,
            statistics=all_mask_statistics(
                input_mask, target_mask, encoded_input, encoded_target, self.mask_layout
            ),
            regularizer_terms=dict(decision.terms),
            attention=decision.attention,
        )


def recorded_config(**kwargs: Any) -> dict[str, Any]:
    """The model_config that SimpleTransformer(**kwargs) records, without building the model:
    the signature's defaults, the given options, and the defaults __init__ resolves."""
    parameters = inspect.signature(SimpleTransformer.__init__).parameters
    config = {name: p.default for name, p in parameters.items() if name != "self"}
    config.update(kwargs)
    config["agent_balance"] = resolved_agent_balance(
        config["agent_balance"], config["agent_shared_weights"]
    )
    return config
