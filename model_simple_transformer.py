"""SimpleTransformer: a cascade of transformer stages that combines two songs' latents.

Stage 0 reads concat(input, target) and starts from their (masked) sum; stage k > 0 reads
concat(input, previous output, target) and refines the previous output. With one stage the model
reads the input alone. The model is built from a `ModelConfig` (songweave/model/config.py).
Masks (the learned creative agent, or a fixed strategy from `songweave.model.fixed_masks`) are
computed once per forward and applied the same way in training, evaluation and inference; the
agent and `band_energy` decide per band-window of `mask_layout` (see `band_layout`).
`forward(..., return_record=True)` also returns a `ForwardRecord`: the applied masks, their
statistics (`mask_metrics.all_mask_statistics`) and the agent's regularizer terms.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from creative_agent import CreativeAgent, MaskDecision
from songweave.audio.band_layout import BandLayout, build_layout
from songweave.model.config import ModelConfig, field_names
from songweave.model.dropout_masks import compiled_dropout, cpu_dropout
from songweave.model.fixed_masks import complementary_masks
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


class SimpleTransformer(nn.Module):
    """The cascade, built from a ModelConfig: `SimpleTransformer(config)`, or the same fields as
    keywords (the seed's `SimpleTransformer(encoding_dim=..., nhead=..., num_layers=...,
    num_transformer_layers=..., dropout=..., use_creative_agent=...)`). `model_config` is the
    typed configuration; `config` its plain values, as checkpoints store them."""

    def __init__(self, config: ModelConfig | None = None, **options: Any):
        super().__init__()
        if config is not None and not isinstance(config, ModelConfig):
            raise TypeError(
                f"SimpleTransformer takes a ModelConfig or keyword options, got {config!r}"
            )
        if config is not None and options:
            config = dataclasses.replace(config, **options)
        elif config is None:
            unknown = sorted(set(options) - set(field_names()))
            if unknown:
                raise TypeError(f"SimpleTransformer got an unexpected option {unknown[0]!r}")
            config = ModelConfig(**options)
        self.model_config: ModelConfig = config
        self.encoding_dim = config.encoding_dim
        self.anti_cheating = config.anti_cheating
        self.mask_type = config.mask_type
        self.hard_masks = config.hard_masks
        self.keep_target_parts = config.keep_target_parts
        # The band-window grid of the masks (agent, band_energy) and of the band figures.
        self.mask_layout: BandLayout = build_layout(
            config.mask_layout,
            config.encoding_dim,
            config.sample_rate,
            config.mask_bands,
            config.mask_window_frames,
        )
        self.creative_agent = (
            CreativeAgent(
                config.encoding_dim,
                use_discriminator=config.use_discriminator,
                hidden_dim=config.agent_hidden_dim,
                temperature=config.agent_temperature,
                temporal_diversity_weight=config.agent_temporal_diversity_weight,
                switch_weight=config.agent_switch_weight,
                shared_weights=config.agent_shared_weights,
                balance=config.agent_balance,
                layout=self.mask_layout,
                loudness_prior=config.agent_loudness_prior,
            )
            if config.use_creative_agent
            else None
        )
        dim, stages = config.encoding_dim, config.num_transformer_layers
        stage_channels = [dim] if stages == 1 else [2 * dim] + [3 * dim] * (stages - 1)
        self.stages = nn.ModuleList(
            CascadeStage(
                channels,
                dim,
                config.nhead,
                config.num_layers,
                config.dropout,
                config.dim_feedforward,
                config.activation_checkpointing,
            )
            for channels in stage_channels
        )

    @property
    def config(self) -> dict[str, Any]:
        """The plain values of `model_config` (what a checkpoint stores as model_config)."""
        return self.model_config.to_dict()

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
