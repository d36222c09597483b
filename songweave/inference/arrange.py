"""Arrange two full songs with a trained model: sliding windows, batched, overlap-add.

    creative-arrange --checkpoint runs/demo/checkpoint_best.pth \
        --input song_a.ogg --target song_b.flac --output arrangement.wav

A and B may have any length, format, sample rate and channel count: both are decoded, downmixed
to mono and resampled to the codec's rate. The output has the input's length. Windows of the
training segment length advance by segment * (1 - overlap); the target is looped when shorter than
the input. Every window pair is encoded, combined by the model and decoded in batches, then the
windows are overlap-added with raised-cosine crossfades normalized by the summed window, so the
joins have no clicks (with an identity model the input comes back exactly). Also writes
OUT_masks.png (the arrangement's input mask over time x channel) and prints the real-time factor.

The output's extension picks its format: .wav (PCM_16, PCM_24 or FLOAT), .flac (PCM_16 or
PCM_24) or .ogg (Vorbis); anything else, or an output that is one of the inputs, is refused before
any work. `--sample_rate` writes at the codec's rate (default), at the input file's own rate
(`source`) or at any rate in Hz, resampled with torchaudio's windowed sinc as in prepare_pairs.

Library use: `arrange(model, codec, input_audio, target_audio, segment_samples, overlap,
batch_size) -> (output_audio, input_mask_full, target_mask_full)` on arrays;
`arrange_files(checkpoint, input, target, output, ...) -> ArrangeResult` on files (the CLI);
`write_audio(path, audio, sample_rate, subtype)` writes the format the name asks for;
`check_output(output, inputs)` and `output_format(path)` refuse bad outputs before any work;
`demo_outputs(checkpoint_dir, dataset_folder)` evaluates and arranges after the demo training.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time

if __name__ == "__main__":
    from songweave.runtime.launch_env import prefer_passive_openmp_wait

    prefer_passive_openmp_wait()
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from torch import Tensor, nn

from model_simple_transformer import ForwardRecord
from songweave.audio.alignment import AlignmentPlan
from songweave.audio.codecs import Codec
from songweave.audio.io import (
    OUTPUT_FORMATS,
    SUBTYPES,
    check_output_path,
    output_format,
    output_subtype,
    read_mono,
    write_audio,
)
from songweave.audio.ranges import (
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    check_sample_rate,
    check_segment_seconds,
)
from songweave.inference.load import inference, load_model, training_segment_seconds
from songweave.inference.preflight import capped_segment, check_plan, plan_arrangement
from songweave.inference.sources import combined_sources, snap_to_beats, stem_paths
from songweave.runtime.checkpoint import CheckpointError
from songweave.runtime.cli import (
    EXIT_OK,
    EXIT_USAGE,
    OneLineParser,
    add_bool_flag,
    add_device_flag,
    setup_logging,
)
from songweave.runtime.cpu_runtime import tune_malloc
from songweave.runtime.precision import REQUESTS as PRECISION_REQUESTS
from songweave.runtime.precision import autocast_for, resolve_precision
from songweave.runtime.resources import ModelSize

log = logging.getLogger(__name__)

DEFAULT_OVERLAP = 0.25
# Below this summed window weight a sample counts as covered by no window (guards the division).
_WEIGHT_EPS = 1e-8


SAMPLE_RATE_WORDS = ("codec", "source")


class IdentityModel(nn.Module):
    """Returns the input latents unchanged (no masks): checks windowing + overlap-add alone."""

    def forward(
        self,
        encoded_input: Tensor,
        encoded_target: Tensor | None = None,
        *,
        return_record: bool = False,
        need_attention: bool = False,
    ) -> tuple[Tensor, None] | tuple[Tensor, None, ForwardRecord]:
        return (encoded_input, None, ForwardRecord()) if return_record else (encoded_input, None)


# ---------------------------------------------------------------------------------------------
# Windowing


def window_starts(num_samples: int, segment: int, hop: int) -> list[int]:
    """Start of every window: every `hop` samples, plus one window ending exactly at the end.

    The last window is shifted back to end at `num_samples` (instead of running into padding), so
    the model never sees a half-empty window; normalization by the summed window absorbs the
    irregular last overlap. One window at 0 when the audio is not longer than a segment.
    """
    if segment < 1 or hop < 1:
        raise ValueError(f"segment ({segment}) and hop ({hop}) must be >= 1 sample")
    if num_samples <= segment:
        return [0]
    starts = list(range(0, num_samples - segment, hop))
    starts.append(num_samples - segment)
    return starts


def crossfade_window(segment: int, fade: int) -> Tensor:
    """Flat window with sin^2 / cos^2 ramps of `fade` samples at both ends (float64).

    At hop = segment - fade the ramps of neighbouring windows sum to exactly 1
    (sin^2 + cos^2); the half-sample offset keeps every weight strictly positive.
    """
    window = torch.ones(segment, dtype=torch.float64)
    fade = min(max(int(fade), 0), segment)
    if fade > 0:
        position = (torch.arange(fade, dtype=torch.float64) + 0.5) / fade
        ramp = torch.sin(0.5 * math.pi * position) ** 2
        window[:fade] *= ramp
        window[segment - fade :] *= ramp.flip(0)
    return window


def loop_to_length(audio: Tensor, length: int) -> Tensor:
    """Repeat (or crop) 1-D audio to `length` samples; silence when `audio` is empty."""
    if audio.numel() == 0:
        return audio.new_zeros(length)
    repeats = math.ceil(length / audio.numel())
    return audio.repeat(repeats)[:length]


def _model_device(model: nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _as_mono_tensor(audio: Any, name: str) -> Tensor:
    if not isinstance(audio, Tensor):
        audio = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    tensor = audio.detach().float().cpu()
    if tensor.dim() > 1 and math.prod(tensor.shape[:-1]) != 1:
        raise ValueError(
            f"{name}: expected mono audio [S], got shape {tuple(tensor.shape)} (downmix first)"
        )
    tensor = tensor.reshape(-1)
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name}: audio contains NaN or infinite samples")
    return tensor


def arrange(
    model: Any,
    codec: Codec,
    input_audio: Any,
    target_audio: Any,
    segment_samples: int,
    overlap: float = DEFAULT_OVERLAP,
    batch_size: int = 8,
    progress: bool = True,
    precision: str = "auto",
    beat_samples: Sequence[int] = (),
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Arrange mono `input_audio` [S] with `target_audio` (any length, looped) at codec.sample_rate.
    Windows start on the input's beats (`beat_samples`, sample positions) where one is near the
    regular grid.

    Returns (output [S] float32, input_mask_full [D, T] or None, target_mask_full or None), masks
    overlap-added over the whole arrangement in the latent frame domain (None when the model does
    not mask). `model(encoded_input, encoded_target, return_record=True) -> (output_latent, _,
    ForwardRecord)`, as SimpleTransformer; the masks come from the record.
    `precision` ("auto", "fp32", "bf16"; see songweave/runtime/precision.py) is the model's:
    "auto" runs it under
    bf16 autocast where the device multiplies bf16 natively (measured 2.3x faster per window on an
    AMX CPU, outputs within 0.5% of fp32). The codec always runs in fp32.
    """
    from tqdm import tqdm

    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"--overlap must be a fraction in [0, 1), got {overlap}")
    if batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {batch_size}")
    segment = int(segment_samples)
    if segment < 1:
        raise ValueError(f"segment length must be >= 1 sample, got {segment_samples}")
    source = _as_mono_tensor(input_audio, "input")
    target = _as_mono_tensor(target_audio, "target")
    num_samples = source.numel()
    if num_samples == 0:
        raise ValueError("input: no audio samples")
    if target.numel() == 0:
        raise ValueError("target: no audio samples")

    segment = capped_segment(segment, num_samples)
    hop = max(1, int(round(segment * (1.0 - overlap))))
    fade = segment - hop
    padded = max(num_samples, segment)  # a short input is zero-padded to one window
    source = torch.nn.functional.pad(source, (0, padded - num_samples))
    target = loop_to_length(target, padded)
    starts = snap_to_beats(window_starts(padded, segment, hop), beat_samples, fade // 4)
    # float32 accumulation keeps the identity round trip above 100 dB and halves the memory of
    # long songs (one hour = 86 M samples).
    window = crossfade_window(segment, fade).float()

    device = _model_device(model) if isinstance(model, nn.Module) else torch.device("cpu")
    model_precision = resolve_precision(precision, device)
    if isinstance(model, nn.Module):
        model.eval()
    codec = codec.to(device).eval()
    codec_hop = int(getattr(codec, "hop", 0) or round(codec.sample_rate / codec.frame_rate))
    output = torch.zeros(padded)
    weight_sum = torch.zeros(padded)
    total_frames = codec.num_frames(padded)
    input_mask_full = target_mask_full = mask_weight = None

    bar = tqdm(total=len(starts), desc="arranging", unit="window", disable=not progress)
    with inference(), bar:
        for first in range(0, len(starts), batch_size):
            batch_starts = starts[first : first + batch_size]
            size = len(batch_starts)
            frames = torch.stack(
                [source[s : s + segment] for s in batch_starts]
                + [target[s : s + segment] for s in batch_starts]
            )[:, None]
            latents = codec.encode(frames.to(device))
            encoded_input, encoded_target = latents[:size], latents[size:]
            with autocast_for(device, model_precision):
                result, _, record = model(encoded_input, encoded_target, return_record=True)
            audio = codec.decode(result.float())[:, 0, :segment].float().cpu()
            check_window_outputs(audio, batch_starts, first, len(starts), codec.sample_rate)
            for row, start in enumerate(batch_starts):
                weights = window.clone()
                # The song's own start and end have no neighbour to crossfade with.
                if start == 0:
                    weights[:fade] = 1.0
                if start + segment >= padded:
                    weights[segment - fade :] = 1.0
                output[start : start + segment] += weights * audio[row]
                weight_sum[start : start + segment] += weights
            if record.input_mask is not None:
                input_mask, target_mask = (
                    m.expand_as(encoded_input).float().cpu()
                    for m in (record.input_mask, record.target_mask)
                )
                if input_mask_full is None:
                    input_mask_full = torch.zeros(encoded_input.shape[1], total_frames)
                    target_mask_full = torch.zeros_like(input_mask_full)
                    mask_weight = torch.zeros(total_frames)
                _add_masks(
                    input_mask_full,
                    target_mask_full,
                    mask_weight,
                    input_mask,
                    target_mask,
                    batch_starts,
                    window,
                    codec_hop,
                )
            bar.update(size)

    result_audio = output / weight_sum.clamp_min(_WEIGHT_EPS)
    result_audio = result_audio[:num_samples].numpy()
    if input_mask_full is not None:
        norm = mask_weight.clamp_min(_WEIGHT_EPS)
        input_mask_full = (input_mask_full / norm).numpy()
        target_mask_full = (target_mask_full / norm).numpy()
        frames_kept = min(codec.num_frames(num_samples), input_mask_full.shape[-1])
        input_mask_full = input_mask_full[:, :frames_kept]
        target_mask_full = target_mask_full[:, :frames_kept]
    return result_audio, input_mask_full, target_mask_full


def check_window_outputs(
    audio: Tensor, batch_starts: list[int], first_index: int, count: int, sample_rate: int
) -> None:
    """A window whose output holds NaN or Inf stops the arrangement before anything is written,
    naming the window: such a model is broken, and silence in its place would hide it."""
    finite = torch.isfinite(audio).all(dim=-1)
    if bool(finite.all()):
        return
    row = int(torch.nonzero(~finite)[0])
    start = batch_starts[row]
    index = first_index + row + 1
    seconds = start / sample_rate
    raise ValueError(
        f"window {index} of {count} ({seconds:.2f}-{seconds + audio.shape[-1] / sample_rate:.2f}"
        f" s): the model produced NaN or infinite samples; nothing was written"
    )


def _add_masks(
    input_full: Tensor,
    target_full: Tensor,
    weight_full: Tensor,
    input_mask: Tensor,
    target_mask: Tensor,
    starts: list[int],
    window: Tensor,
    codec_hop: int,
) -> None:
    """Overlap-add window masks [B, D, Tw] into the full masks [D, T] (for plots only)."""
    window_frames = input_mask.shape[-1]
    # Crossfade weight at each frame's position in the window (nearest sample).
    positions = (torch.arange(window_frames) * codec_hop).clamp(max=window.numel() - 1)
    frame_weights = window[positions]
    total = input_full.shape[-1]
    for row, start in enumerate(starts):
        offset = int(round(start / codec_hop))
        stop = min(offset + window_frames, total)
        count = stop - offset
        if count <= 0:
            continue
        w = frame_weights[:count]
        input_full[:, offset:stop] += input_mask[row, :, :count] * w
        target_full[:, offset:stop] += target_mask[row, :, :count] * w
        weight_full[offset:stop] += w


# ---------------------------------------------------------------------------------------------
# Files


def read_song(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Any audio file -> mono float32 at `sample_rate`, read block by block (audio_io.read_mono).

    Raises AudioFileError (a ValueError; one line naming the file and what is wrong: missing, a
    folder, a symlink loop, unreadable, empty, non-finite samples).
    """
    return read_mono(path, sample_rate)


def check_output(output: str | os.PathLike, inputs: Sequence[str | os.PathLike]) -> None:
    """Refuse, before any work, an output that would overwrite one of the inputs (same file, any
    spelling), or that cannot be written (a folder, an unwritable place: see
    audio_io.check_output_path)."""
    target = Path(output).expanduser().resolve()
    for song in inputs:
        if Path(song).expanduser().resolve() == target:
            raise ValueError(f"--output {output} is the input file {song}: choose another name")
    check_output_path(output)


def parse_sample_rate(text: str) -> int | str:
    """'codec', 'source' or a rate in Hz (argparse type)."""
    value = str(text).strip().lower()
    if value in SAMPLE_RATE_WORDS:
        return value
    try:
        rate = int(value)
    except ValueError:
        rate = 0
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise argparse.ArgumentTypeError(
            f"expected codec, source or a rate in Hz from {MIN_SAMPLE_RATE} to "
            f"{MAX_SAMPLE_RATE}, got {text!r}"
        )
    return rate


def output_rate(sample_rate: int | str, codec_rate: int, source_rate: int) -> int:
    """The rate to write: the codec's ('codec'), the input's own ('source'), or the Hz given."""
    if sample_rate == "codec":
        return int(codec_rate)
    if sample_rate == "source":
        return int(source_rate)
    if isinstance(sample_rate, int) and not isinstance(sample_rate, bool) and sample_rate > 0:
        return sample_rate
    raise ValueError(f"--sample_rate must be codec, source or a rate in Hz, got {sample_rate!r}")


def resample_output(
    audio: np.ndarray, from_rate: int, to_rate: int, length: int | None = None
) -> np.ndarray:
    """Resample (torchaudio windowed sinc) to `to_rate`; crop or zero-pad to `length` if given."""
    if to_rate != from_rate:
        tensor = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
        audio = AF.resample(tensor, int(from_rate), int(to_rate)).numpy()
    if length is not None and len(audio) != length:
        audio = np.pad(audio[:length], (0, max(0, length - len(audio))))
    return np.ascontiguousarray(audio, dtype=np.float32)


def masks_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}_masks.png")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        description=__doc__.split("\n\n")[0],
        epilog="Booleans accept true/false, 1/0, yes/no (a bare flag means true).",
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help=(
            "checkpoint .pth written by training, or a folder written by creative-export-model "
            "(path)"
        ),
    )
    parser.add_argument("--input", required=True, help="song A, any format/rate/channels (path)")
    parser.add_argument("--target", required=True, help="song B, looped when shorter than A (path)")
    parser.add_argument(
        "--output",
        required=True,
        help="the arrangement, A's length; its extension picks the format: "
        f"{', '.join(OUTPUT_FORMATS)} (path)",
    )
    parser.add_argument(
        "--sample_rate",
        type=parse_sample_rate,
        default="codec",
        help="rate of the output: codec (the model's), source (the input file's) "
        "or a rate in Hz such as 44100 or 48000",
    )
    parser.add_argument(
        "--segment_seconds",
        type=float,
        default=None,
        help="window length (s); default: the training segment length",
    )
    parser.add_argument(
        "--overlap",
        type=float,
        default=DEFAULT_OVERLAP,
        help="overlap of consecutive windows (fraction of a window)",
    )
    parser.add_argument("--batch_size", type=int, default=8, help="windows per model call (count)")
    parser.add_argument(
        "--subtype",
        default=None,
        type=str.upper,
        choices=SUBTYPES,
        help="sample format; default: PCM_16 for .wav and .flac, VORBIS for .ogg",
    )
    add_device_flag(parser)
    parser.add_argument(
        "--precision",
        choices=PRECISION_REQUESTS,
        default="auto",
        help="the model's precision: auto (bf16 where the CPU or GPU multiplies "
        "it natively, else fp32), fp32 or bf16; the codec stays fp32",
    )
    add_bool_flag(
        parser,
        "--align",
        True,
        "stretch and shift the target to the input's tempo, a compatible key and its beats "
        "before combining (false: combine the songs as they are)",
    )
    add_bool_flag(parser, "--progress", True, "show a progress bar")
    return parser


@dataclass
class ArrangeResult:
    output: Path
    masks_png: Path | None
    seconds: float  # arranged audio duration
    process_seconds: float  # wall time of arrange() alone
    total_seconds: float  # including loading the checkpoint and decoding both songs
    peak: float
    subtype: str
    sample_rate: int  # of the written file
    stems: tuple[Path, Path]  # the input and the target as combined
    alignment: AlignmentPlan | None  # None: not aligned

    @property
    def real_time_factor(self) -> float:
        return self.seconds / max(self.process_seconds, 1e-9)

    def summary(self, input_path: Any, target_path: Any) -> str:
        scaled = ", scaled to 0.99" if self.subtype != "FLOAT" and self.peak > 1 else ""
        lines = [
            f"arranged {self.seconds:.1f} s ({input_path} with {target_path}) in "
            f"{self.process_seconds:.2f} s: real-time factor {self.real_time_factor:.1f}x "
            f"({self.seconds / max(self.total_seconds, 1e-9):.1f}x including loading)",
            (
                f"wrote {self.output} ({self.subtype}, {self.sample_rate} Hz, "
                f"peak {self.peak:.3f}{scaled})"
            ),
        ]
        lines.append(f"wrote {self.stems[0]} and {self.stems[1]} (the sources as combined)")
        if self.masks_png is not None:
            lines.append(f"wrote {self.masks_png}")
        return "\n".join(lines)


def arrange_files(
    checkpoint: str | os.PathLike,
    input_path: str | os.PathLike,
    target_path: str | os.PathLike,
    output: str | os.PathLike,
    segment_seconds: float | None = None,
    overlap: float = DEFAULT_OVERLAP,
    batch_size: int = 8,
    subtype: str | None = None,
    device: str = "auto",
    progress: bool = True,
    sample_rate: int | str = "codec",
    precision: str = "auto",
    align: bool = True,
) -> ArrangeResult:
    """The CLI as a function: read both songs, align the target to the input (tempo, key,
    beats), arrange, write OUTPUT, the two sources as combined (OUT_input, OUT_target) and
    OUT_masks.png.

    `checkpoint` is a training checkpoint or a folder written by creative-export-model.
    """
    from songweave.viz import plots

    if segment_seconds is not None:
        check_segment_seconds(segment_seconds)
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"--overlap must be a fraction in [0, 1), got {overlap}")
    if batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {batch_size}")
    if isinstance(sample_rate, int):
        check_sample_rate(sample_rate)
    output = Path(output)
    subtype = output_subtype(output_format(output), subtype)
    for path in (output, *stem_paths(output)):
        check_output(path, [input_path, target_path])
    started = time.perf_counter()
    trained = load_model(checkpoint, device)
    codec = trained.codec
    seconds = segment_seconds or training_segment_seconds(trained.train_config)
    source = read_song(input_path, codec.sample_rate)
    target = read_song(target_path, codec.sample_rate)
    info = sf.info(str(input_path))
    rate = output_rate(sample_rate, codec.sample_rate, info.samplerate)
    if sample_rate == "source":
        check_sample_rate(rate, f"--sample_rate source ({input_path} is at {rate} Hz)")
    segment = capped_segment(int(round(seconds * codec.sample_rate)), len(source))
    output_samples = (
        info.frames if sample_rate == "source" else round(len(source) * rate / codec.sample_rate)
    )
    plan = plan_arrangement(
        arrangement_model_size(trained, segment, batch_size),
        len(source),
        len(target),
        segment,
        max(1, int(round(segment * (1.0 - overlap)))),
        trained.mask_kind is not None,
        output_samples,
        subtype,
    )
    check_plan(plan, output, codec.sample_rate)
    sources = combined_sources(source, target, codec.sample_rate, align)
    loaded = time.perf_counter()
    audio, input_mask, _ = arrange(
        trained.model,
        codec,
        sources.input,
        sources.target,
        segment,
        overlap,
        batch_size,
        progress=progress,
        precision=precision,
        beat_samples=sources.beat_samples(codec.sample_rate),
    )
    processed = time.perf_counter()
    seconds_out = len(audio) / codec.sample_rate
    # At the input's own rate, the output has exactly the input file's length.
    length = info.frames if sample_rate == "source" else None
    audio = resample_output(audio, codec.sample_rate, rate, length)
    peak, subtype = write_audio(output, audio, rate, subtype)
    for path, stem in zip(stem_paths(output), (sources.input, sources.target)):
        write_audio(path, resample_output(stem, codec.sample_rate, rate, len(audio)), rate, subtype)
    masks_png = None
    if input_mask is not None:
        axis = plots.ChannelAxis.for_codec(codec.name, codec.dim, codec.sample_rate)
        title = f"input mask over the arrangement ({trained.mask_kind})"
        masks_png = plots.mask_heatmap(
            masks_path(output), input_mask, codec.frame_rate, axis, title=title
        )
    else:
        log.info("the model does not mask its inputs: no mask plot")
    return ArrangeResult(
        output,
        masks_png,
        seconds_out,
        processed - loaded,
        processed - started,
        peak,
        subtype,
        rate,
        stem_paths(output),
        sources.plan,
    )


def arrangement_model_size(trained: Any, segment: int, batch_size: int) -> ModelSize:
    """The model as the memory estimate sees it, running `batch_size` windows in eval mode."""
    config = trained.model.config
    return ModelSize(
        parameters=sum(p.numel() for p in trained.model.parameters()),
        encoding_dim=int(config["encoding_dim"]),
        nhead=int(config["nhead"]),
        num_layers=int(config["num_layers"]),
        num_stages=int(config["num_transformer_layers"]),
        dim_feedforward=int(config["dim_feedforward"]),
        dropout=0.0,
        batch_size=batch_size,
        latent_frames=trained.codec.num_frames(segment),
        # both songs' windows pass the codec
        audio_samples=2 * segment,
    )


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    tune_malloc()
    try:
        result = arrange_files(
            args.checkpoint,
            args.input,
            args.target,
            args.output,
            args.segment_seconds,
            args.overlap,
            args.batch_size,
            args.subtype,
            args.device,
            progress=args.progress,
            sample_rate=args.sample_rate,
            precision=args.precision,
            align=args.align,
        )
    except (CheckpointError, FileNotFoundError, ValueError, TimeoutError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(result.summary(args.input, args.target))
    return EXIT_OK


if __name__ == "__main__":
    from songweave.runtime.cli import run_module

    run_module(main, "songweave.inference.arrange")
