"""Arrange two songs from Python in one call, with a checkpoint or an exported model.

    from songweave.inference import api
    model = api.load("release/demo")      # export folder, or a checkpoint .pth
    result = api.arrange_songs(model, "a.ogg", "b.flac", output="out.flac")
    result.audio, result.sample_rate, result.input_mask

Songs are files (any format, rate and channel count, read as creative-arrange reads them) or mono
arrays (numpy or torch) at `input_sample_rate` / `target_sample_rate` (default: the model's
rate). The arrangement is computed exactly as `creative-arrange` computes it (same windows,
crossfades and resampler), so both give the same audio.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from songweave.audio.alignment import AlignmentPlan
from songweave.audio.io import output_format, output_subtype, write_audio
from songweave.audio.ranges import check_segment_seconds
from songweave.inference.arrange import (
    DEFAULT_OVERLAP,
    arrange,
    check_output,
    output_rate,
    read_song,
    resample_output,
)
from songweave.inference.load import TrainedModel, load_model, training_segment_seconds
from songweave.inference.sources import combined_sources

__all__ = ["Arrangement", "arrange_songs", "load"]

Song = str | os.PathLike | np.ndarray | Any  # a path, or a mono numpy array / torch tensor


@dataclass
class Arrangement:
    audio: np.ndarray  # mono float32, the input's length, at sample_rate
    sample_rate: int
    input_mask: np.ndarray | None  # [D, T] input mask over the arrangement (None: no masks)
    target_mask: np.ndarray | None
    output: Path | None  # the file written, when `output` was given
    alignment: AlignmentPlan | None = None  # how the target was aligned (None: it was not)


def load(path: str | os.PathLike, device: str = "auto") -> TrainedModel:
    """Model + codec from a training checkpoint (.pth) or a folder written by
    creative-export-model."""
    return load_model(path, device)


def _is_path(song: Song) -> bool:
    return isinstance(song, (str, os.PathLike))


def _as_array(song: Any, name: str) -> np.ndarray:
    if hasattr(song, "detach"):  # a torch tensor
        song = song.detach().cpu().numpy()
    audio = np.asarray(song, dtype=np.float32)
    if audio.ndim > 1 and audio.size != max(audio.shape):
        raise ValueError(f"{name}: expected a mono array, got shape {audio.shape} (downmix first)")
    return audio.reshape(-1)


def _song_audio(
    song: Song, codec_rate: int, rate: int | None, name: str
) -> tuple[np.ndarray, int, int]:
    """(audio at codec_rate, the song's own rate, its own length in samples)."""
    if _is_path(song):
        if rate is not None:
            raise ValueError(f"{name}_sample_rate applies to arrays; a file carries its own rate")
        audio = read_song(song, codec_rate)
        info = sf.info(str(song))
        return audio, int(info.samplerate), int(info.frames)
    audio = _as_array(song, name)
    own_rate = int(rate or codec_rate)
    return resample_output(audio, own_rate, codec_rate), own_rate, audio.size


def arrange_songs(
    model: TrainedModel | str | os.PathLike,
    input: Song,
    target: Song,
    *,
    output: str | os.PathLike | None = None,
    sample_rate: int | str = "codec",
    input_sample_rate: int | None = None,
    target_sample_rate: int | None = None,
    segment_seconds: float | None = None,
    overlap: float = DEFAULT_OVERLAP,
    batch_size: int = 8,
    subtype: str | None = None,
    device: str = "auto",
    progress: bool = False,
    align: bool = True,
) -> Arrangement:
    """Arrange `input` with `target` (looped when shorter); optionally write `output`.

    sample_rate: "codec" (the model's rate), "source" (the input's own rate and length) or a
    rate in Hz. `model` may also be a path, loaded with `load` on `device`.
    """
    if output is not None:
        output = Path(output)
        output_subtype(output_format(output), subtype)
        check_output(output, [song for song in (input, target) if _is_path(song)])
    if segment_seconds is not None:
        check_segment_seconds(segment_seconds, "segment_seconds")
    trained = model if isinstance(model, TrainedModel) else load(model, device)
    codec = trained.codec
    seconds = segment_seconds or training_segment_seconds(trained.train_config)
    source, source_rate, source_length = _song_audio(
        input, codec.sample_rate, input_sample_rate, "input"
    )
    partner, _, _ = _song_audio(target, codec.sample_rate, target_sample_rate, "target")
    rate = output_rate(sample_rate, codec.sample_rate, source_rate)
    sources = combined_sources(source, partner, codec.sample_rate, align)
    audio, input_mask, target_mask = arrange(
        trained.model,
        codec,
        sources.input,
        sources.target,
        round(seconds * codec.sample_rate),
        overlap,
        batch_size,
        progress=progress,
        beat_samples=sources.beat_samples(codec.sample_rate),
    )
    audio = resample_output(
        audio, codec.sample_rate, rate, source_length if sample_rate == "source" else None
    )
    if output is not None:
        write_audio(output, audio, rate, subtype)
    return Arrangement(audio, rate, input_mask, target_mask, output, sources.plan)
