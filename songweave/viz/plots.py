"""Matplotlib figures shared by creative-evaluate and creative-arrange (PNG files, no display
needed).

Figures are built with the object-oriented API on an Agg canvas, so importing this module never
touches pyplot's global state or needs a display, and every PNG is written atomically (temporary
file + os.replace) so a reader never sees half an image.

- `mask_plot(path, input_mask, target_mask, ...)`: the masks as applied (constant per band-window
  for the agent and band_energy) and, given the latents, what the cascade reads: the masked input
  and target latents in dB; time x channel heatmaps (channel axis in Hz for the MDCT codec).
- `mask_heatmap(path, mask, ...)`: one mask (e.g. a whole arrangement's input mask).
- `training_curves(path, records)`: loss (train/val), band and cell complementarity, band
  balance, band diversities and content alignment per epoch from metrics.jsonl records; missing
  keys are skipped.
- `attention_plot(path, attention, ...)`: the agent's cross-attention map [T_input, T_target].
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from songweave.model.mask_metrics import METRIC_LABELS

log = logging.getLogger(__name__)

# Heatmaps wider than this many time columns are mean-pooled first: a 3-minute arrangement has
# ~34k MDCT frames, far more than a PNG has pixels.
MAX_COLUMNS = 2000


@dataclass(frozen=True)
class ChannelAxis:
    """How to label the channel (vertical) axis of a latent heatmap."""

    low: float
    high: float
    label: str

    @staticmethod
    def for_codec(codec_name: str, dim: int, sample_rate: int) -> ChannelAxis:
        # A frequency-bin channel k is the band centred on (k + 0.5) * sample_rate / (2 * dim) Hz,
        # so an extent of [0, sample_rate / 2] puts every row at its centre frequency.
        from songweave.audio.codecs import codec_facts

        if codec_facts(codec_name, {"dim": dim}).channels_are_frequencies:
            return ChannelAxis(0.0, sample_rate / 2.0, "frequency (Hz)")
        return ChannelAxis(0.0, float(dim), f"{codec_name} latent channel")


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Render `fig` to PNG at `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        FigureCanvasAgg(fig)  # attaches the Agg canvas to the figure
        fig.savefig(tmp, format="png", dpi=dpi)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _as_array(mask: Any) -> np.ndarray:
    array = mask.detach().float().cpu().numpy() if hasattr(mask, "detach") else np.asarray(mask)
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"expected a [D, T] mask, got shape {array.shape}")
    return array


def pool_columns(array: np.ndarray, max_columns: int = MAX_COLUMNS) -> np.ndarray:
    """Mean-pool the last axis so that it has at most `max_columns` columns."""
    columns = array.shape[-1]
    if columns <= max_columns:
        return array
    factor = math.ceil(columns / max_columns)
    padded = columns + (-columns) % factor
    # Repeat the last column as padding so the last pooled column is not darkened.
    array = np.concatenate([array, np.repeat(array[..., -1:], padded - columns, axis=-1)], axis=-1)
    return array.reshape(*array.shape[:-1], padded // factor, factor).mean(axis=-1)


def _heatmap(
    ax: Any,
    array: np.ndarray,
    seconds: float,
    axis: ChannelAxis,
    title: str,
    vmin: float = 0.0,
    vmax: float = 1.0,
    cmap: str = "magma",
) -> Any:
    image = ax.imshow(
        pool_columns(array),
        origin="lower",
        aspect="auto",
        interpolation="nearest",
        extent=(0.0, seconds, axis.low, axis.high),
        vmin=vmin,
        vmax=vmax,
        cmap=cmap,
    )
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(axis.label)
    return image


# Dynamic range of the masked-latent panels: quieter cells are drawn as the floor.
LATENT_RANGE_DB = 60.0


def _magnitude_db(latent: np.ndarray, reference: float) -> np.ndarray:
    return 20.0 * np.log10(np.maximum(np.abs(latent), 1e-12) / max(reference, 1e-12))


def mask_plot(
    path: str | os.PathLike,
    input_mask: Any,
    target_mask: Any,
    frame_rate: float,
    axis: ChannelAxis,
    title: str = "",
    input_latent: Any = None,
    target_latent: Any = None,
) -> Path:
    """The masks as applied over time x channel and, when both latents [D, T] are given, what
    the cascade reads of each song: |latent * mask| in dB (both on one scale, 0 dB = the
    louder song's peak). Without latents the third panel is the overlap input x target."""
    input_mask, target_mask = _as_array(input_mask), _as_array(target_mask)
    seconds = input_mask.shape[-1] / frame_rate
    panels: list[tuple[np.ndarray, str, float, float, str]] = [
        (input_mask, f"input mask (mean {input_mask.mean():.2f})", 0.0, 1.0, "magma"),
        (target_mask, f"target mask (mean {target_mask.mean():.2f})", 0.0, 1.0, "magma"),
    ]
    if input_latent is not None and target_latent is not None:
        seen_input = _as_array(input_latent) * input_mask
        seen_target = _as_array(target_latent) * target_mask
        peak = float(max(np.abs(seen_input).max(), np.abs(seen_target).max()))
        for array, song in ((seen_input, "input"), (seen_target, "target")):
            panels.append(
                (
                    _magnitude_db(array, peak),
                    (f"{song} as the cascade reads it: |latent x mask| (dB)"),
                    -LATENT_RANGE_DB,
                    0.0,
                    "viridis",
                )
            )
    else:
        overlap = input_mask * target_mask
        panels.append(
            (
                overlap,
                (f"overlap input x target (mean {overlap.mean():.3f}; 0 = complementary)"),
                0.0,
                0.25,
                "magma",
            )
        )
    fig = Figure(figsize=(9, 2.9 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True)
    for ax, (array, label, vmin, vmax, cmap) in zip(axes, panels):
        image = _heatmap(ax, array, seconds, axis, label, vmin=vmin, vmax=vmax, cmap=cmap)
        fig.colorbar(image, ax=ax, fraction=0.04)
    axes[-1].set_xlabel("time (s)")
    if title:
        fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)


def mask_heatmap(
    path: str | os.PathLike, mask: Any, frame_rate: float, axis: ChannelAxis, title: str = ""
) -> Path:
    """One mask as a time x channel heatmap (long masks are mean-pooled in time)."""
    array = _as_array(mask)
    seconds = array.shape[-1] / frame_rate
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    ax = fig.subplots()
    image = _heatmap(ax, array, seconds, axis, title or "input mask")
    ax.set_xlabel("time (s)")
    fig.colorbar(image, ax=ax, fraction=0.03, label="share kept by the input")
    return save_figure(fig, path)


def attention_plot(
    path: str | os.PathLike, attention: Any, frame_rate: float, title: str = ""
) -> Path:
    """Cross-attention weights [T_input, T_target] (input frames query target frames)."""
    array = _as_array(attention)
    fig = Figure(figsize=(7, 6), layout="constrained")
    ax = fig.subplots()
    # Pool both axes for long sequences (rows: input frames, columns: target frames).
    pooled = pool_columns(pool_columns(array, 800).T, 800).T
    image = ax.imshow(
        pooled,
        origin="lower",
        aspect="auto",
        interpolation="nearest",
        extent=(0.0, array.shape[1] / frame_rate, 0.0, array.shape[0] / frame_rate),
        cmap="viridis",
    )
    ax.set_xlabel("target time (s) (keys)")
    ax.set_ylabel("input time (s) (queries)")
    ax.set_title(title or "creative agent cross-attention (mean over heads)", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.04, label="attention weight")
    return save_figure(fig, path)


def _series(records: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of one figure. A validation figure is read from KEY, else from
    val_KEY (the worker logs every validation figure with that prefix)."""
    xs, ys = [], []
    for index, record in enumerate(records):
        value = record.get(key, record.get(f"val_{key}"))
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            epoch = record.get("epoch", index + 1)
            xs.append(float(epoch) if isinstance(epoch, (int, float)) else float(index + 1))
            ys.append(float(value))
    return xs, ys


# Panels of the training curves: (title, figures); band figures lead, the cell complementarity
# is drawn next to the band one to show a comb (cell 1.0, band lower) at a glance.
CURVE_PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("loss", ("train_loss", "val_loss")),
    ("complementarity", ("band_complementarity", "complementarity")),
    ("band balance", ("band_balance",)),
    ("band diversity", ("band_temporal_diversity", "band_pair_diversity")),
    ("content alignment", ("content_alignment",)),
    ("band switches", ("band_switches",)),
)


def training_curves(path: str | os.PathLike, records: Sequence[dict]) -> Path | None:
    """Per-epoch curves from metrics.jsonl records; None (nothing written) when no key has data."""
    panels = [
        (name, [(key, *_series(records, key)) for key in keys]) for name, keys in CURVE_PANELS
    ]
    panels = [(name, [s for s in series if s[1]]) for name, series in panels]
    panels = [(name, series) for name, series in panels if series]
    if not panels:
        return None
    columns = min(2, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig = Figure(figsize=(5.5 * columns, 3.6 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    for ax, (name, series) in zip(axes, panels):
        for key, xs, ys in series:
            ax.plot(
                xs,
                ys,
                marker="o" if len(xs) < 30 else None,
                markersize=3,
                label=METRIC_LABELS.get(key, key),
            )
        if name == "band balance":
            ax.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)
