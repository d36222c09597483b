"""Fixed (rule-based) complementary masks for pairs of latents.

Given an input latent and a target latent, both ``[B, D, T]`` (D channels, T frames), each
strategy returns ``(input_mask, target_mask)`` in [0, 1] that broadcast against the latents:

- ``[1, D, T]`` for content-independent strategies (``none``, ``temporal``, ``frequency``,
  ``spectral``, ``hybrid``). These are built once per (mask_type, D, T, options, device, dtype)
  and cached, because the model asks for them on every training step. Treat them as read-only.
- ``[B, D, T]`` for content-dependent strategies (``energy``, ``band_energy``,
  ``band_energy_median``).

``band_energy`` decides per band-window of a `band_layout.BandLayout` (pass ``layout=``): the
song with the larger pooled energy P(z^2) keeps the band-window, spread back to cells with the
layout's crossfades, like the learned agent's masks. It has no parameters: the reference a learned
agent must beat. ``band_energy_median`` ranks the band-windows of each pair by how much louder
the input is (`mask_metrics.loudness_difference`) and gives the input the louder half, so that
each pair is split exactly in half, as the agent's masks are (`band_layout.split_at_median`).

Metric definitions (complementarity, coverage, balance, ...) are those of `mask_metrics`.
Every builder is vectorized (arange / comparisons / clamp): no Python loop over frames or channels.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from songweave.audio.band_layout import BandLayout, clear_layout_cache, split_at_median
from songweave.model.mask_metrics import loudness_difference

log = logging.getLogger(__name__)

# Every mask type, the one list that launchers, evaluation and the model validate against.
MASK_TYPES = (
    "none",
    "temporal",
    "frequency",
    "spectral",
    "energy",
    "hybrid",
    "band_energy",
    "band_energy_median",
)

# Types that need a `layout=` argument (and both songs).
LAYOUT_MASK_TYPES = ("band_energy", "band_energy_median")

# Content-independent strategies: the mask depends only on the shape and the options.
_STATIC_TYPES = ("none", "temporal", "frequency", "spectral", "hybrid")

_DESCRIPTIONS = {
    "none": "no masking: both masks are all ones (input and target are blended, not complementary)",
    "temporal": "alternating time segments: input keeps segments 0,2,4,..., target the others, "
    "with short linear crossfades at the boundaries; an even number of equal segments by default, "
    "so both songs get half",
    "frequency": "frequency split: input keeps the low freq_split_ratio of channels, "
    "target the rest",
    "spectral": "fixed random channel split (seeded): input keeps channel_keep_ratio of the "
    "channels, target the rest",
    "energy": "content-dependent: input keeps its high-energy frames (above the energy_threshold "
    "quantile), target keeps the other frames",
    "hybrid": "time-frequency checkerboard: in the input's segments input keeps the low band and "
    "target the high band, swapped in the target's segments",
    "band_energy": "content-dependent: in every band-window of the layout the louder song (pooled "
    "energy) keeps it, with short crossfades between windows",
    "band_energy_median": "content-dependent: the half of each pair's band-windows where the input "
    "is most louder than the target goes to the input, the other half to the target",
}


@dataclass(frozen=True)
class MaskOptions:
    """Options shared by all strategies; each strategy reads only the ones it needs.

    Frozen (hashable) so it can be part of the mask cache key.
    """

    # Length of one alternating time segment, in latent frames (2 s at EnCodec's 75 Hz).
    temporal_segment_frames: int = 150
    # Stretch the segments so that an even number of equal ones covers the sequence: both songs
    # then get the same share (150-frame segments over 375 frames would give the input 60%).
    temporal_balanced: bool = True
    # Width of the linear crossfade centred on each segment boundary, in frames (0 = hard cut).
    fade_frames: int = 4
    # Fraction of channels (lowest first) kept by the input in `frequency` and `hybrid`.
    freq_split_ratio: float = 0.3
    # Fraction of channels kept by the input in `spectral`.
    channel_keep_ratio: float = 0.5
    # Quantile of the per-frame energy above which the input keeps a frame in `energy`.
    energy_threshold: float = 0.7
    # Value a mask takes where it "drops" its source. 0 keeps masks strictly complementary;
    # the seed project used 0.2 for its frequency mask (complementarity then = 1 - attenuation).
    attenuation: float = 0.0
    # Seed of the `spectral` channel permutation (a private torch.Generator, never global RNG).
    seed: int = 0

    def __post_init__(self) -> None:
        _check_int("temporal_segment_frames", self.temporal_segment_frames, minimum=1)
        _check_int("fade_frames", self.fade_frames, minimum=0)
        if self.fade_frames > self.temporal_segment_frames:
            raise ValueError(
                f"fade_frames ({self.fade_frames}) must be <= temporal_segment_frames "
                f"({self.temporal_segment_frames})"
            )
        for name in ("freq_split_ratio", "channel_keep_ratio", "energy_threshold"):
            value = getattr(self, name)
            if (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not 0.0 < value < 1.0
            ):
                raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
        a = self.attenuation
        if not isinstance(a, (int, float)) or isinstance(a, bool) or not 0.0 <= a < 1.0:
            raise ValueError(f"attenuation must be a number in [0, 1), got {a!r}")
        _check_int("seed", self.seed, minimum=0)


def _check_int(name: str, value: object, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def make_options(**options: object) -> MaskOptions:
    """Build validated MaskOptions; unknown names are a one-line ValueError (catches typos)."""
    known = {f.name for f in dataclasses.fields(MaskOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown mask option(s) {unknown}; valid options: {sorted(known)}")
    return MaskOptions(**options)  # type: ignore[arg-type]


def _check_mask_type(mask_type: str) -> None:
    if mask_type not in MASK_TYPES:
        raise ValueError(f"unknown mask_type {mask_type!r}; valid: {', '.join(MASK_TYPES)}")


def describe_mask(mask_type: str) -> str:
    """One-line human description of a strategy."""
    _check_mask_type(mask_type)
    return _DESCRIPTIONS[mask_type]


# --------------------------------------------------------------------------------------------
# Builders of 0/1-valued "input keeps" patterns (float32, on CPU; the cache moves them once).


def temporal_segment_length(num_frames: int, opts: MaskOptions) -> float:
    """Segment length in frames: temporal_segment_frames, or with temporal_balanced the length
    closest to it that splits num_frames into an even number of equal segments."""
    if not opts.temporal_balanced:
        return float(opts.temporal_segment_frames)
    pairs = max(1, round(num_frames / (2 * opts.temporal_segment_frames)))
    return num_frames / (2 * pairs)


def _temporal_pattern(num_frames: int, opts: MaskOptions) -> Tensor:
    """[T] pattern: 1 in even segments, 0 in odd ones, linear ramps of fade_frames at boundaries."""
    seg = temporal_segment_length(num_frames, opts)
    centre = torch.arange(num_frames, dtype=torch.float64) + 0.5  # frame centres
    # Distance of each frame centre to the centre of the nearest "input" segment (period 2*seg):
    # 0 in the middle of an input segment, seg/2 at a boundary, seg in the middle of a target one.
    dist = ((centre - seg / 2 + seg) % (2 * seg) - seg).abs()
    hard = (dist < seg / 2).to(torch.float64)
    if opts.fade_frames == 0:
        return hard.to(torch.float32)
    # Ramp centred on the boundary (value 0.5 there), reaching 0/1 fade_frames/2 away.
    ramp = (0.5 + (seg / 2 - dist) / opts.fade_frames).clamp(0.0, 1.0)
    # The sequence's own start and end are not segment boundaries: no fade there.
    nearest_boundary = torch.round(centre / seg) * seg
    inner = (nearest_boundary > 0) & (nearest_boundary < num_frames)
    return torch.where(inner, ramp, hard).to(torch.float32)


def _low_band_pattern(num_channels: int, ratio: float) -> Tensor:
    """[D] pattern: 1 on the lowest round(ratio*D) channels (at least 1, at most D-1 when D>1)."""
    keep = _num_kept(num_channels, ratio)
    return (torch.arange(num_channels) < keep).to(torch.float32)


def _random_channels_pattern(num_channels: int, opts: MaskOptions) -> Tensor:
    """[D] pattern: 1 on a seeded random subset of round(channel_keep_ratio*D) channels."""
    keep = _num_kept(num_channels, opts.channel_keep_ratio)
    # Private CPU generator: deterministic across devices and never touches global RNG state.
    generator = torch.Generator(device="cpu").manual_seed(opts.seed)
    rank = torch.randperm(num_channels, generator=generator)  # rank[c] = position of channel c
    return (rank < keep).to(torch.float32)


def _num_kept(num_channels: int, ratio: float) -> int:
    keep = round(ratio * num_channels)
    # Keep both sides non-empty whenever there are at least two channels.
    return min(max(keep, 1), max(num_channels - 1, 1))


def _soften(pattern: Tensor, attenuation: float) -> Tensor:
    """Map a [0,1] pattern to [attenuation, 1]: dropped cells keep `attenuation` of their signal."""
    if attenuation == 0.0:
        return pattern
    return attenuation + (1.0 - attenuation) * pattern


@functools.lru_cache(maxsize=64)
def _static_masks(
    mask_type: str,
    num_channels: int,
    num_frames: int,
    opts: MaskOptions,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """Content-independent masks [1, D, T], built once per key (called every training step)."""
    # inference_mode(False): a mask first built under torch.inference_mode (evaluation) must
    # still be usable later by autograd (training); no_grad: masks are constants.
    # Built on CPU (float64 arithmetic is not available on every accelerator), moved once.
    with torch.inference_mode(False), torch.no_grad():
        if mask_type == "none":
            input_keep = torch.ones(num_channels, num_frames)
            target_keep = input_keep
        else:
            if mask_type == "temporal":
                time_part = _temporal_pattern(num_frames, opts)
                input_keep = time_part.expand(num_channels, num_frames)
            elif mask_type == "frequency":
                band = _low_band_pattern(num_channels, opts.freq_split_ratio)
                input_keep = band[:, None].expand(num_channels, num_frames)
            elif mask_type == "spectral":
                band = _random_channels_pattern(num_channels, opts)
                input_keep = band[:, None].expand(num_channels, num_frames)
            elif mask_type == "hybrid":
                time_part = _temporal_pattern(num_frames, opts)[None, :]
                band = _low_band_pattern(num_channels, opts.freq_split_ratio)[:, None]
                # Checkerboard (XOR with soft time edges): each source gets every frame and
                # every band somewhere, and the two masks still sum to 1 everywhere.
                input_keep = time_part * band + (1.0 - time_part) * (1.0 - band)
            else:  # pragma: no cover - guarded by _check_mask_type
                raise ValueError(f"unknown mask_type {mask_type!r}")
            target_keep = 1.0 - input_keep
        input_mask = _soften(input_keep, opts.attenuation).to(device, dtype).contiguous()[None]
        target_mask = _soften(target_keep, opts.attenuation).to(device, dtype).contiguous()[None]
    log.debug(
        "built %s masks D=%d T=%d on %s (%s)", mask_type, num_channels, num_frames, device, dtype
    )
    return input_mask, target_mask


def _energy_masks(encoded_input: Tensor, opts: MaskOptions) -> tuple[Tensor, Tensor]:
    """Content-dependent masks [B, D, T]: input keeps its loudest frames, target the rest."""
    with torch.no_grad():
        # fp32 statistics: quantile does not support half precision and autocast may hand us one.
        energy = encoded_input.detach().float().pow(2).mean(dim=1)  # [B, T]
        threshold = torch.quantile(energy, opts.energy_threshold, dim=-1, keepdim=True)  # [B, 1]
        # Strict ">" so a silent (constant-energy) input hands every frame to the target.
        input_keep = (energy > threshold).float()[:, None, :]  # [B, 1, T]
        target_keep = 1.0 - input_keep
        shape = encoded_input.shape
        input_mask = _soften(input_keep, opts.attenuation).expand(shape).to(encoded_input.dtype)
        target_mask = _soften(target_keep, opts.attenuation).expand(shape).to(encoded_input.dtype)
    return input_mask.contiguous(), target_mask.contiguous()


def _band_energy_masks(
    encoded_input: Tensor,
    encoded_target: Tensor,
    layout: BandLayout,
    opts: MaskOptions,
    halve: bool = False,
) -> tuple[Tensor, Tensor]:
    """Content-dependent masks [B, D, T]: the louder song keeps each band-window; with halve=True
    the input keeps the half of each pair's band-windows where it is most louder."""
    with torch.no_grad():
        # The same floor added to both energies keeps their order, so "> 0" is "input louder".
        louder = loudness_difference(encoded_input, encoded_target, layout, drop_incomplete=False)
        if halve:
            louder = split_at_median(louder)
        # Strict ">": a band-window silent in both songs goes to the target, as in `energy`.
        input_keep = (louder > 0).float()
        input_keep = layout.spread(input_keep, encoded_input.shape[-1])
        input_mask = _soften(input_keep, opts.attenuation).to(encoded_input.dtype)
        target_mask = _soften(1.0 - input_keep, opts.attenuation).to(encoded_input.dtype)
    return input_mask.contiguous(), target_mask.contiguous()


def _check_latents(encoded_input: Tensor, encoded_target: Tensor | None) -> None:
    if not isinstance(encoded_input, Tensor) or encoded_input.dim() != 3:
        shape = (
            tuple(encoded_input.shape) if isinstance(encoded_input, Tensor) else type(encoded_input)
        )
        raise ValueError(f"encoded_input must be a [B, D, T] tensor, got {shape}")
    if encoded_target is not None and (
        not isinstance(encoded_target, Tensor) or encoded_target.shape != encoded_input.shape
    ):
        shape = (
            tuple(encoded_target.shape)
            if isinstance(encoded_target, Tensor)
            else type(encoded_target)
        )
        raise ValueError(
            f"encoded_target must have the shape of encoded_input {tuple(encoded_input.shape)}, "
            f"got {shape}"
        )
    if not encoded_input.is_floating_point():
        raise ValueError(f"latents must be floating point, got {encoded_input.dtype}")


def complementary_masks(
    mask_type: str,
    encoded_input: Tensor,
    encoded_target: Tensor | None = None,
    *,
    layout: BandLayout | None = None,
    **options: object,
) -> tuple[Tensor, Tensor]:
    """Masks (input_mask, target_mask) for a pair of latents [B, D, T].

    Shapes: [1, D, T] for content-independent strategies (cached and shared: do not modify in
    place), [B, D, T] for the content-dependent ones. Values in [0, 1]; same device and dtype as
    encoded_input. The LAYOUT_MASK_TYPES read both songs and need `encoded_target` and `layout`
    (see `band_layout.layout_for_codec`); the other strategies ignore the target's content (it only
    fixes the expected shape and may be None) and the layout. Options: see MaskOptions; unknown
    or invalid options raise ValueError.
    """
    _check_mask_type(mask_type)
    opts = make_options(**options)
    _check_latents(encoded_input, encoded_target)
    _, num_channels, num_frames = encoded_input.shape
    if mask_type == "energy":
        return _energy_masks(encoded_input, opts)
    if mask_type in LAYOUT_MASK_TYPES:
        if layout is None:
            raise ValueError(
                f"mask_type {mask_type!r} needs layout= (band_layout.layout_for_codec)"
            )
        if encoded_target is None:
            raise ValueError(f"mask_type {mask_type!r} compares both songs: pass encoded_target")
        if layout.dim != num_channels:
            raise ValueError(
                f"the layout covers {layout.dim} channels, the latents have {num_channels}"
            )
        return _band_energy_masks(
            encoded_input, encoded_target, layout, opts, halve=mask_type == "band_energy_median"
        )
    return _static_masks(
        mask_type, num_channels, num_frames, opts, encoded_input.device, encoded_input.dtype
    )


def apply_complementary_mask(
    encoded_input: Tensor,
    encoded_target: Tensor,
    mask_type: str = "temporal",
    *,
    layout: BandLayout | None = None,
    **options: object,
) -> tuple[Tensor, Tensor]:
    """Seed-era API: (encoded_input * input_mask, encoded_target * target_mask), both [B, D, T]."""
    if encoded_target is None:
        raise ValueError("apply_complementary_mask needs encoded_target (got None)")
    input_mask, target_mask = complementary_masks(
        mask_type, encoded_input, encoded_target, layout=layout, **options
    )
    return encoded_input * input_mask, encoded_target * target_mask


def clear_mask_cache() -> None:
    """Drop cached masks and layout index tensors (e.g. to free GPU memory after evaluation)."""
    _static_masks.cache_clear()
    clear_layout_cache()
