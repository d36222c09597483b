"""TensorBoard with sound and pictures: per-epoch scalars, and fixed validation pairs to listen to.

Rank 0 of training opens one `TensorBoardTracker(run_dir)` (events in RUN/tensorboard) and, each
epoch, logs the epoch record and a few fixed validation pairs:

    tracker = TensorBoardTracker(run_dir, enabled=rank == 0)
    samples = collect_samples(model, codec, val_set, sample_indices(len(val_set), 4), max_seconds=4)
    tracker.log_scalars(record, step=record["epoch"])
    tracker.log_samples(record["epoch"], samples)
    tracker.close()

Each pair shows up in TensorBoard's AUDIO tab as input, target, masked mix (what the cascade
starts from) and model output, and in IMAGES as its input mask above its target mask (channel 0
at the bottom, time to the right, viridis: 0 dark, 1 yellow). Without the tensorboard package
everything here is a no-op after one info line.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch

log = logging.getLogger(__name__)

TENSORBOARD_DIRNAME = "tensorboard"
AUDIO_ROLES = ("input", "target", "masked_mix", "output")
# Mask images are enlarged by whole pixels up to about this size, so that a [128, 190] mask is
# not a thumbnail in TensorBoard.
MIN_IMAGE_HEIGHT, MIN_IMAGE_WIDTH = 256, 512


@dataclass
class SamplePair:
    """One validation pair as heard and seen: mono float audio, masks [D, T] in [0, 1]."""

    name: str  # e.g. "val_003": stable across epochs
    sample_rate: int
    input_audio: np.ndarray
    target_audio: np.ndarray
    masked_mix_audio: np.ndarray  # decode(input * input_mask + target * target_mask)
    output_audio: np.ndarray
    input_mask: np.ndarray | None  # None when the model does not mask
    target_mask: np.ndarray | None
    frame_rate: float  # latent frames per second (mask columns)
    codec_name: str
    input_source: str | None = None  # song names, when the dataset's manifest has them
    target_source: str | None = None

    def audio(self, role: str) -> np.ndarray:
        return getattr(self, f"{role}_audio")

    @property
    def seconds(self) -> float:
        return len(self.input_audio) / self.sample_rate


def sample_indices(count: int, wanted: int) -> list[int]:
    """`wanted` pair indices spread evenly over a split of `count` pairs (fixed across epochs)."""
    if count <= 0 or wanted <= 0:
        return []
    return sorted({round(float(i)) for i in np.linspace(0, count - 1, min(wanted, count))})


def _device_of(module: Any) -> torch.device:
    if isinstance(module, torch.nn.Module):
        for tensor in list(module.parameters()) + list(module.buffers()):
            return tensor.device
    return torch.device("cpu")


def _mono(audio: torch.Tensor) -> np.ndarray:
    return audio.reshape(-1).float().cpu().numpy().astype(np.float32)


def collect_samples(
    model: torch.nn.Module,
    codec: Any,
    dataset: Any,
    indices: Sequence[int],
    max_seconds: float | None = None,
    name_prefix: str = "val",
) -> list[SamplePair]:
    """Run `model` on dataset[i] for each index and decode input, target, masked mix and output.

    `model` is a SimpleTransformer (the unwrapped module, not DDP); the masks come from its
    forward record. Audio comes from the dataset items
    when they carry it (return_audio=True), else from decoding their latents. The model's
    train/eval mode is restored afterwards; nothing is computed with gradients.
    """
    if not indices:
        return []
    items = [dataset[int(i)] for i in indices]
    model_device, codec_device = _device_of(model), _device_of(codec)
    encoded_input = torch.stack([item["input_latent"] for item in items]).to(model_device)
    encoded_target = torch.stack([item["target_latent"] for item in items]).to(model_device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output, _, record = model(encoded_input, encoded_target, return_record=True)
            if record.input_mask is not None:
                input_mask = record.input_mask.expand_as(encoded_input).float()
                target_mask = record.target_mask.expand_as(encoded_input).float()
                mixed = encoded_input * input_mask + encoded_target * target_mask
            else:
                input_mask = target_mask = None
                mixed = encoded_input + encoded_target
            latents = torch.cat([output, mixed, encoded_input, encoded_target]).float()
            decoded = codec.decode(latents.to(codec_device)).cpu().split(len(items))
    finally:
        model.train(was_training)
    samples = []
    for row, (index, item) in enumerate(zip(indices, items)):
        # Decoding may pad past the segment; the dataset's audio, when present, has its length.
        length = (
            item["input_audio"].shape[-1] if "input_audio" in item else decoded[2][row].shape[-1]
        )
        keep = length if max_seconds is None else min(length, int(max_seconds * codec.sample_rate))
        frames = max(1, math.ceil(keep / codec.sample_rate * codec.frame_rate))
        audio = {
            role: _mono(decoded[k][row])[:keep]
            for k, role in ((0, "output"), (1, "masked_mix"), (2, "input"), (3, "target"))
        }
        for role in ("input", "target"):
            if f"{role}_audio" in item:
                audio[role] = _mono(item[f"{role}_audio"])[:keep]
        samples.append(
            SamplePair(
                name=f"{name_prefix}_{int(index):03d}",
                sample_rate=int(codec.sample_rate),
                input_audio=audio["input"],
                target_audio=audio["target"],
                masked_mix_audio=audio["masked_mix"],
                output_audio=audio["output"],
                input_mask=None
                if input_mask is None
                else input_mask[row, :, :frames].cpu().numpy(),
                target_mask=None
                if target_mask is None
                else target_mask[row, :, :frames].cpu().numpy(),
                frame_rate=float(codec.frame_rate),
                codec_name=str(codec.name),
            )
        )
    return samples


def mask_image(input_mask: np.ndarray, target_mask: np.ndarray) -> np.ndarray:
    """Input mask above target mask as one RGB uint8 image [H, W, 3] (viridis, 0..1 fixed)."""
    from matplotlib import colormaps

    separator = np.full((2, input_mask.shape[1]), np.nan, dtype=np.float32)
    # Flipped rows: channel 0 at the bottom of each panel, as in the PNG plots.
    stacked = np.concatenate([np.flipud(input_mask), separator, np.flipud(target_mask)])
    rgba = colormaps["viridis"](np.clip(np.nan_to_num(stacked, nan=0.0), 0.0, 1.0))
    rgba[np.isnan(stacked)] = (1.0, 1.0, 1.0, 1.0)
    image = (rgba[..., :3] * 255).round().astype(np.uint8)
    tall = max(1, MIN_IMAGE_HEIGHT // image.shape[0])
    wide = max(1, MIN_IMAGE_WIDTH // image.shape[1])
    return np.repeat(np.repeat(image, tall, axis=0), wide, axis=1)


def _playable(audio: np.ndarray) -> np.ndarray:
    """Finite audio within [-1, 1] (scaled down, not clipped) for TensorBoard's 16-bit WAV."""
    audio = np.nan_to_num(np.asarray(audio, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    return audio * (0.99 / peak) if peak > 1.0 else audio


class TensorBoardTracker:
    """SummaryWriter in RUN/tensorboard; every method is a no-op when disabled or unavailable."""

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True) -> None:
        self.path = Path(run_dir) / TENSORBOARD_DIRNAME
        self.writer: Any = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.info("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
            return
        self.writer = SummaryWriter(str(self.path))

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    def log_scalars(self, record: dict[str, Any], step: int, prefix: str = "epoch") -> None:
        """Every finite number of `record` (except the epoch itself) as PREFIX/KEY at `step`."""
        if self.writer is None:
            return
        for key, value in record.items():
            if key == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                self.writer.add_scalar(f"{prefix}/{key}", value, step)
        self.writer.flush()

    def log_samples(self, epoch: int, samples: Sequence[SamplePair]) -> None:
        """Audio of every pair (4 clips) and its mask image, at step `epoch`."""
        if self.writer is None:
            return
        for sample in samples:
            for order, role in enumerate(AUDIO_ROLES, 1):
                audio = torch.from_numpy(_playable(sample.audio(role)))[None]
                self.writer.add_audio(
                    f"{sample.name}/{order}_{role}", audio, epoch, sample_rate=sample.sample_rate
                )
            if sample.input_mask is not None and sample.target_mask is not None:
                self.writer.add_image(
                    f"{sample.name}/masks_input_above_target",
                    mask_image(sample.input_mask, sample.target_mask),
                    epoch,
                    dataformats="HWC",
                )
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
