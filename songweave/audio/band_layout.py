"""Band-and-window layout of latent masks: the units a listener hears, not single latent cells.

A mask decides per latent cell [B, D, T] which song keeps it. Cells are finer than hearing: a mask
that alternates single MDCT bins keeps both songs audible in every band (a blend), although each
cell belongs to one song only. A `BandLayout` groups cells into band-windows, so that masks can be
decided and measured per band-window.

Definitions:

- ``mel`` layout (MDCT codec; channel k of D is a frequency bin): 24 bands (``bands``) equally
  spaced on the mel scale mel(f) = 2595 * log10(1 + f / 700) from 0 Hz to Nyquist (sr / 2). Bin k
  belongs to the band that holds its centre frequency (k + 0.5) * (sr / 2) / D. Bands that hold no
  bin are dropped (at D = 128, 24 kHz all 24 hold a bin; bands 0, 1, 2 and 4 hold one each).
- ``time`` layout (EnCodec; channels are not frequencies): one "band" made of all channels, so
  masks are pooled over time only.
- Windows of ``window_frames`` frames (9 = 48 ms at the MDCT's 187.5 frames/s) from frame 0.

`pool(x, drop_incomplete)` is the mean over a band's bins and a window's frames: [B, D, T] ->
[B, K, W]. Metrics drop the incomplete last window (drop_incomplete=True); deciding masks keeps it
(its mean is over the frames it has), since every frame must get a value. `spread(values, T)` maps
band-window values back to [B, D, T] with a linear crossfade of ``transition_frames`` frames
centred on each inner window boundary (none at the sequence's start and end).

Both are vectorized and differentiable; their index tensors are built once per (layout, length,
device, dtype) and cached.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import torch
from torch import Tensor

LAYOUT_KINDS = ("mel", "time")

DEFAULT_BANDS = 24
DEFAULT_WINDOW_FRAMES = 9
# Two frames (10.7 ms at 187.5 frames/s): with the MDCT's own 2-frame synthesis overlap a switch
# between songs then takes about 20 ms, short against the 48 ms windows, long enough not to click.
DEFAULT_TRANSITION_FRAMES = 2


def hz_to_mel(frequency_hz: Tensor) -> Tensor:
    return 2595.0 * torch.log10(1.0 + frequency_hz / 700.0)


@dataclass(frozen=True)
class BandLayout:
    """Which band every latent channel belongs to, and how frames group into windows.

    Frozen and hashable (plain ints and tuples), so it can key caches and travel in configs.
    Build it with `BandLayout.mel`, `BandLayout.time` or `build_layout` / `layout_for_codec`.
    """

    kind: str
    # band_of_channel[k] = band of channel k; bands are numbered 0..K-1, in channel order.
    band_of_channel: tuple[int, ...]
    window_frames: int = DEFAULT_WINDOW_FRAMES
    transition_frames: int = DEFAULT_TRANSITION_FRAMES

    def __post_init__(self) -> None:
        if self.kind not in LAYOUT_KINDS:
            raise ValueError(f"unknown layout kind {self.kind!r}; valid: {', '.join(LAYOUT_KINDS)}")
        _check_int("window_frames", self.window_frames, minimum=1)
        _check_int("transition_frames", self.transition_frames, minimum=0)
        if self.transition_frames > self.window_frames:
            raise ValueError(
                f"transition_frames ({self.transition_frames}) must be <= window_frames "
                f"({self.window_frames})"
            )
        bands = self.band_of_channel
        if (
            not bands
            or bands[0] != 0
            or any(b - a not in (0, 1) for a, b in itertools.pairwise(bands))
        ):
            raise ValueError(
                "band_of_channel must number bands 0, 1, ... in channel order, none empty"
            )

    @classmethod
    def mel(
        cls,
        dim: int,
        sample_rate: int,
        bands: int = DEFAULT_BANDS,
        window_frames: int = DEFAULT_WINDOW_FRAMES,
        transition_frames: int = DEFAULT_TRANSITION_FRAMES,
    ) -> BandLayout:
        """Mel bands over MDCT bins (channel k centred at (k + 0.5) * (sr / 2) / dim Hz)."""
        _check_int("dim", dim, minimum=1)
        _check_int("sample_rate", sample_rate, minimum=1)
        _check_int("bands", bands, minimum=1)
        nyquist = sample_rate / 2.0
        centres = (torch.arange(dim, dtype=torch.float64) + 0.5) * (nyquist / dim)
        band_width = float(hz_to_mel(torch.tensor(nyquist, dtype=torch.float64))) / bands
        band = (hz_to_mel(centres) / band_width).floor().long().clamp(0, bands - 1)
        # Renumber the bands that hold a bin consecutively (empty ones are dropped).
        _, band = torch.unique_consecutive(band, return_inverse=True)
        return cls("mel", tuple(band.tolist()), window_frames, transition_frames)

    @classmethod
    def time(
        cls,
        dim: int,
        window_frames: int = DEFAULT_WINDOW_FRAMES,
        transition_frames: int = DEFAULT_TRANSITION_FRAMES,
    ) -> BandLayout:
        """One band holding all `dim` channels: masks vary over windows only."""
        _check_int("dim", dim, minimum=1)
        return cls("time", (0,) * dim, window_frames, transition_frames)

    @property
    def dim(self) -> int:
        return len(self.band_of_channel)

    @property
    def num_bands(self) -> int:
        return self.band_of_channel[-1] + 1

    def band_sizes(self) -> tuple[int, ...]:
        """Number of channels in each band."""
        sizes = [0] * self.num_bands
        for band in self.band_of_channel:
            sizes[band] += 1
        return tuple(sizes)

    def num_windows(self, num_frames: int, drop_incomplete: bool) -> int:
        if drop_incomplete:
            return num_frames // self.window_frames
        return -(-num_frames // self.window_frames)

    def pool(self, x: Tensor, drop_incomplete: bool) -> Tensor:
        """Mean of x [B, D, T] over each band's channels and each window's frames: [B, K, W].

        drop_incomplete=True leaves out the last window when it has fewer than window_frames
        frames (metrics); False keeps it, averaged over the frames it has.
        """
        self._check_cells(x)
        num_frames = x.shape[-1]
        num_windows = self.num_windows(num_frames, drop_incomplete)
        if num_windows == 0:
            raise ValueError(
                f"{num_frames} frames hold no complete window of {self.window_frames} frames"
            )
        # Time first: the band matmul then runs on window_frames times fewer columns.
        size = self.window_frames
        complete = num_frames // size
        windows = x[..., : complete * size].unflatten(-1, (complete, size)).mean(-1)
        if num_windows > complete:
            tail = x[..., complete * size :].mean(-1, keepdim=True)
            windows = torch.cat([windows, tail], dim=-1)
        averaging = _cached(_band_averaging, _band_averaging_cached)(self, x.device, x.dtype)
        return torch.matmul(averaging, windows)

    def spread(self, values: Tensor, num_frames: int) -> Tensor:
        """Band-window values [B, K, W] -> cells [B, D, T], W = ceil(T / window_frames).

        Time: a linear crossfade of transition_frames frames centred on each inner window
        boundary. Frequency: every channel takes its band's value, with hard edges at band edges.
        Why hard: the lowest mel bands are one MDCT bin wide, so a one-bin crossfade would half-mix
        whole bands; each MDCT bin already leaks into its neighbours through the sine window; and
        with one band per bin the band figures measure exactly what is applied.
        Linear in `values` with weights summing to 1, so spread(1 - v) == 1 - spread(v).
        """
        if values.dim() != 3 or values.shape[1] != self.num_bands:
            raise ValueError(
                f"expected band values [B, {self.num_bands}, W], got {tuple(values.shape)}"
            )
        _check_int("num_frames", num_frames, minimum=1)
        expected_windows = self.num_windows(num_frames, drop_incomplete=False)
        if values.shape[-1] != expected_windows:
            raise ValueError(
                f"{num_frames} frames need {expected_windows} windows of {self.window_frames}, "
                f"got {values.shape[-1]}"
            )
        first, second, weight = _cached(_frame_interpolation, _frame_interpolation_cached)(
            self.window_frames, self.transition_frames, num_frames, values.device, values.dtype
        )
        frames = values.index_select(-1, first)
        if self.transition_frames > 0:
            frames = torch.lerp(frames, values.index_select(-1, second), weight)
        channel_band = _cached(_channel_band_index, _channel_band_index_cached)(self, values.device)
        return frames.index_select(1, channel_band)

    def _check_cells(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"expected [B, {self.dim}, T] for this {self.kind} layout, got {shape}"
            )


def split_at_median(band_claim: Tensor) -> Tensor:
    """Per band-window claim differences [B, K, W] shifted so that each pair's median is 0.

    Thresholded at 0, every pair then gives exactly half of its band-windows to each song: the
    learned agent (and the `band_energy_median` rule) decides which half, never how much. Left
    free, the agent learns to reveal more of the target (which makes the reconstruction easier)
    and keeps the balance penalty small rather than zero, so it would be compared with fixed masks
    at a different balance. The midpoint of the two middle values (not torch.median's lower one)
    keeps the split antisymmetric: swapping the songs negates the shifted claims exactly.
    """
    flat = band_claim.flatten(1).float()
    middle = torch.quantile(flat, 0.5, dim=1, interpolation="midpoint")
    return band_claim - middle.to(band_claim.dtype)[:, None, None]


def build_layout(
    kind: str,
    dim: int,
    sample_rate: int,
    bands: int = DEFAULT_BANDS,
    window_frames: int = DEFAULT_WINDOW_FRAMES,
    transition_frames: int = DEFAULT_TRANSITION_FRAMES,
) -> BandLayout:
    """A layout by kind ("mel" or "time"); `time` ignores sample_rate and bands."""
    if kind == "mel":
        return BandLayout.mel(dim, sample_rate, bands, window_frames, transition_frames)
    if kind == "time":
        return BandLayout.time(dim, window_frames, transition_frames)
    raise ValueError(f"unknown mask layout {kind!r}; valid: {', '.join(LAYOUT_KINDS)}")


def layout_kind_for_codec(codec_name: str) -> str:
    """The layout kind for a codec's latents ("mel" where channels are frequencies, else
    "time"), as the codec's facts say."""
    from songweave.audio.codecs import CODECS, codec_facts

    try:
        return codec_facts(codec_name).mask_layout
    except ValueError:
        raise ValueError(
            f"no mask layout for codec {codec_name!r}; known: {', '.join(CODECS)}"
        ) from None


def layout_for_codec(
    codec_name: str,
    dim: int,
    sample_rate: int,
    bands: int = DEFAULT_BANDS,
    window_frames: int = DEFAULT_WINDOW_FRAMES,
) -> BandLayout:
    """The layout for a codec's latents, e.g. (codec.name, codec.dim, codec.sample_rate)."""
    return build_layout(layout_kind_for_codec(codec_name), dim, sample_rate, bands, window_frames)


def _check_int(name: str, value: object, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _cached(build, cached):
    # torch.compile traces the builder into its graph (it would warn about, and skip, the cache).
    return build if torch.compiler.is_compiling() else cached


def _band_averaging(layout: BandLayout, device: torch.device, dtype: torch.dtype) -> Tensor:
    """[K, D] matrix whose row k averages the channels of band k."""
    band = torch.tensor(layout.band_of_channel, device=device)
    membership = band[None, :] == torch.arange(layout.num_bands, device=device)[:, None]
    membership = membership.to(torch.float32)
    return (membership / membership.sum(dim=1, keepdim=True)).to(dtype)


def _channel_band_index(layout: BandLayout, device: torch.device) -> Tensor:
    return torch.tensor(layout.band_of_channel, dtype=torch.long, device=device)


def _frame_interpolation(
    window_frames: int,
    transition_frames: int,
    num_frames: int,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per frame: (window, next window, weight of the next window), each [T].

    Frame t (centre t + 0.5) within transition_frames / 2 of an inner boundary b = j *
    window_frames mixes windows j - 1 and j with weight clamp(0.5 + (centre - b) / F, 0, 1) on j
    (0.5 at the boundary); every other frame takes its own window.
    """
    frame = torch.arange(num_frames, device=device)
    own = frame // window_frames
    if transition_frames == 0:
        return own, own, torch.zeros(num_frames, device=device, dtype=dtype)
    num_windows = -(-num_frames // window_frames)
    centre = frame.to(torch.float32) + 0.5
    boundary = torch.round(centre / window_frames).long()  # nearest boundary's window index
    inner = (boundary >= 1) & (boundary <= num_windows - 1)
    ramp = (0.5 + (centre - boundary * window_frames) / transition_frames).clamp(0.0, 1.0)
    first = torch.where(inner, boundary - 1, own)
    second = torch.where(inner, boundary, own)
    weight = torch.where(inner, ramp, torch.zeros_like(ramp))
    return first, second, weight.to(dtype)


def _build_constant(build):
    """lru_cache of a builder of constant tensors, usable under inference_mode and autograd."""

    @functools.lru_cache(maxsize=64)
    def cached(*args):
        # A constant first built under torch.inference_mode (evaluation) must stay usable by
        # autograd later (training).
        with torch.inference_mode(False), torch.no_grad():
            return build(*args)

    return cached


_band_averaging_cached = _build_constant(_band_averaging)
_channel_band_index_cached = _build_constant(_channel_band_index)
_frame_interpolation_cached = _build_constant(_frame_interpolation)


def keep_spread_out_of_compiled_graphs() -> None:
    """Make torch.compile graphs run `BandLayout.spread` eagerly (a graph break); call it before
    compiling. Inductor's CPU backend fuses the backward of spread's index_selects (an
    index_add) into a kernel that indexes out of bounds (torch 2.14). Not a decorator because
    torch.compiler.disable imports torch._dynamo, about 2 s of start-up that every command
    which never compiles (creative-arrange, creative-evaluate) would pay."""
    if not getattr(BandLayout.spread, "_outside_compiled_graphs", False):
        disabled = torch.compiler.disable(BandLayout.spread)
        disabled._outside_compiled_graphs = True
        BandLayout.spread = disabled


def clear_layout_cache() -> None:
    """Drop cached index tensors (e.g. to free device memory after evaluation)."""
    for cached in (_band_averaging_cached, _channel_band_index_cached, _frame_interpolation_cached):
        cached.cache_clear()


def describe_layout(layout: BandLayout, frame_rate: float | None = None) -> str:
    """One line, e.g. "mel: 24 bands over 128 channels, windows of 9 frames (48 ms)"."""
    window = f"{layout.window_frames} frames"
    if frame_rate:
        window += f" ({1000.0 * layout.window_frames / frame_rate:.0f} ms)"
    if layout.kind == "time":
        return f"time: all {layout.dim} channels as one band, windows of {window}"
    return f"mel: {layout.num_bands} bands over {layout.dim} channels, windows of {window}"
