"""Read any audio file as mono float32 at a chosen rate, in bounded memory; check paths first.

    audio = read_mono(path, 24000)      # AudioFileError (one line, names the file) when unusable
    check_output_path(path)             # before writing an output file: ValueError when unusable

``read_mono`` decodes the file in blocks, downmixes each block to mono and resamples it with
torchaudio's windowed-sinc resampler (the same kernel as ``torchaudio.functional.resample`` with
its defaults), carrying the neighbouring input samples the kernel needs from one block to the
next. The result equals resampling the whole decoded file at once (to float32 rounding), but
memory stays at one block plus the output: a 20-minute 8-channel 96 kHz file needs the 115 MB of
its 24 kHz mono output plus about 60 MB, where decoding it whole took 7 GB.

Skip reasons (``AudioFileError.reason``), stable keys:
    missing         no such file
    folder          the path is a folder
    symlink-loop    a symbolic link pointing (indirectly) at itself
    broken-symlink  a symbolic link whose target does not exist
    not-a-file      a device, pipe or socket
    permission      the file cannot be opened for reading
    empty           0 bytes or no audio frames
    unreadable      not audio libsndfile can decode (truncated header, text, ...)
    non-finite      NaN or infinite samples
"""

from __future__ import annotations

import errno
import logging
import math
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.transforms as AT

log = logging.getLogger(__name__)

# torchaudio's resample defaults: they size how much context a block needs from its neighbours.
_LOWPASS_FILTER_WIDTH = 6
_ROLLOFF = 0.99
# Frames decoded per block: 2^20 frames is 11 s at 96 kHz, 32 MB for 8 float32 channels.
BLOCK_FRAMES = 1 << 20

AUDIO_REASONS = (
    "missing",
    "folder",
    "symlink-loop",
    "broken-symlink",
    "not-a-file",
    "permission",
    "empty",
    "unreadable",
    "non-finite",
)


class AudioFileError(ValueError):
    """An input audio file that cannot be used; ``str`` is one line naming the file."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str):
        super().__init__(f"{path}: {detail}")
        self.path = Path(path)
        self.reason = reason
        self.detail = detail


def _one_line(error: BaseException, path: Path) -> str:
    # libsndfile messages repeat the full path; the caller's message already names the file.
    text = " ".join(str(error).split()) or type(error).__name__
    return text.replace(str(path), path.name)[:200]


def check_input_file(path: str | os.PathLike) -> None:
    """Raise AudioFileError with the precise reason when ``path`` is not a readable file."""
    path = Path(path)
    try:
        link = os.lstat(path)
    except FileNotFoundError:
        raise AudioFileError(path, "missing", "audio file not found") from None
    except NotADirectoryError:
        raise AudioFileError(
            path, "missing", "audio file not found (a parent in the path is a file)"
        ) from None
    except OSError as error:
        _raise_stat_error(path, error)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        target = os.readlink(path) if stat.S_ISLNK(link.st_mode) else "?"
        raise AudioFileError(
            path, "broken-symlink", f"broken symbolic link (its target {target} does not exist)"
        ) from None
    except OSError as error:
        _raise_stat_error(path, error)
    if stat.S_ISDIR(info.st_mode):
        raise AudioFileError(path, "folder", "is a folder, not an audio file")
    if not stat.S_ISREG(info.st_mode):
        raise AudioFileError(path, "not-a-file", "not a regular file (a device, pipe or socket)")
    if info.st_size == 0:
        raise AudioFileError(path, "empty", "empty file (0 bytes)")
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        raise AudioFileError(path, "permission", "permission denied: cannot read it") from None
    except OSError as error:
        raise AudioFileError(path, "unreadable", f"cannot open it ({error.strerror})") from None


def _raise_stat_error(path: Path, error: OSError) -> None:
    if error.errno == errno.ELOOP:
        raise AudioFileError(
            path,
            "symlink-loop",
            "symbolic link loop (the link points at itself through other links)",
        ) from None
    if error.errno in (errno.EACCES, errno.EPERM):
        raise AudioFileError(path, "permission", "permission denied: cannot reach it") from None
    raise AudioFileError(path, "unreadable", f"cannot stat it ({error.strerror})") from None


class StreamResampler:
    """Windowed-sinc resampling of a signal that arrives in blocks, equal to resampling it whole.

    torchaudio's resampler computes output frame i (``new`` samples, ``new / orig`` the reduced
    rate ratio) from input samples [i * orig - width, (i + 1) * orig + width), with zeros
    outside the signal. Each ``push`` emits the frames whose inputs have all arrived, keeping
    ``context`` samples on either side so every frame sees exactly the inputs it would see in a
    whole-signal call; ``finish`` emits the rest with the end zero-padded the same way.
    """

    def __init__(self, source_rate: int, target_rate: int):
        if source_rate <= 0 or target_rate <= 0:
            raise ValueError(f"sample rates must be > 0, got {source_rate} -> {target_rate}")
        divisor = math.gcd(source_rate, target_rate)
        self.orig, self.new = source_rate // divisor, target_rate // divisor
        self.identity = self.orig == self.new
        # The kernel is computed once here (functional.resample recomputes it per call), in
        # float32 as functional.resample does for float32 audio: the transform's default float64
        # kernel gives results up to 2.5e-4 away from it.
        self.resampler = (
            None if self.identity else AT.Resample(source_rate, target_rate, dtype=torch.float32)
        )
        width = math.ceil(_LOWPASS_FILTER_WIDTH * self.orig / (min(self.orig, self.new) * _ROLLOFF))
        self.context_frames = math.ceil(width / self.orig) + 1
        context = self.context_frames * self.orig
        # Zeros before the start stand for the zero padding of a whole-signal call.
        self.buffer = np.zeros(context, dtype=np.float32)
        # The buffer starts at input sample (frames_done - context_frames) * orig.
        self.frames_done = 0  # output frames emitted (new samples each)
        self.samples_in = 0  # input samples pushed
        self.finished = False

    def _resample(self, chunk: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.resampler(torch.from_numpy(chunk)).numpy()

    def push(self, block: np.ndarray) -> np.ndarray:
        """Add input samples; return the output samples that are now final."""
        if self.finished:
            raise RuntimeError("push after finish")
        block = np.asarray(block, dtype=np.float32)
        self.samples_in += len(block)
        if self.identity:
            return block.copy()
        self.buffer = np.concatenate([self.buffer, block])
        context = self.context_frames
        buffer_start = (self.frames_done - context) * self.orig
        stop = (buffer_start + len(self.buffer)) // self.orig - context  # first frame not ready
        count = stop - self.frames_done
        if count <= 0:
            return np.zeros(0, dtype=np.float32)
        chunk = self.buffer[: (count + 2 * context) * self.orig]
        out = self._resample(chunk)[context * self.new : (context + count) * self.new]
        self.buffer = self.buffer[count * self.orig :].copy()
        self.frames_done = stop
        return out

    def finish(self) -> np.ndarray:
        """The remaining output samples; the total is ceil(len(input) * new / orig)."""
        self.finished = True
        if self.identity:
            return np.zeros(0, dtype=np.float32)
        total = math.ceil(self.samples_in * self.new / self.orig)
        remaining = total - self.frames_done * self.new
        if remaining <= 0:
            return np.zeros(0, dtype=np.float32)
        out = self._resample(self.buffer)
        start = self.context_frames * self.new
        return out[start : start + remaining]


class _Output:
    """Growing float32 array: preallocated from the header's frame count, grown if it lied."""

    def __init__(self, expected: int):
        self.data = np.empty(max(expected, 0), dtype=np.float32)
        self.size = 0

    def append(self, values: np.ndarray) -> None:
        end = self.size + len(values)
        if end > len(self.data):
            grown = np.empty(max(end, 2 * len(self.data)), dtype=np.float32)
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        self.data[self.size : end] = values
        self.size = end

    def result(self) -> np.ndarray:
        return self.data[: self.size]


# Odd audio, named in a warning when a file is decoded. A downmix more than 10 dB below its
# channels means they cancel (anti-phase); uncorrelated stereo loses 3 dB, identical channels 0.
ANTI_PHASE_DB = 10.0
SILENT_MEAN_SQUARE = 1e-6  # -60 dBFS: too quiet to say anything about phase
DC_LIMIT = 0.02  # mean sample as a fraction of full scale
CLIP_LEVEL = 0.999  # |sample| counted as at full scale
CLIP_FRACTION = 0.001  # of all samples


@dataclass
class SignalStats:
    """Running sums over a decoded file, for the odd-audio warnings (scalars only)."""

    channels: int = 1
    frames: int = 0
    channel_energy: float = 0.0  # sum of squares over every channel
    mono_energy: float = 0.0
    mono_sum: float = 0.0
    clipped: int = 0  # channel samples at full scale

    def add(self, block: np.ndarray, mono: np.ndarray) -> None:
        self.frames += len(block)
        self.channel_energy += float(np.square(block, dtype=np.float64).sum())
        self.mono_energy += float(np.square(mono, dtype=np.float64).sum())
        self.mono_sum += float(mono.sum(dtype=np.float64))
        self.clipped += int(np.count_nonzero(np.abs(block) >= CLIP_LEVEL))

    def oddities(self) -> list[str]:
        """What is odd about the file, one phrase each; empty for ordinary audio."""
        if self.frames == 0:
            return []
        found = []
        channel_ms = self.channel_energy / (self.frames * self.channels)
        mono_ms = self.mono_energy / self.frames
        if self.channels > 1 and channel_ms > SILENT_MEAN_SQUARE:
            drop = 10 * math.log10(channel_ms / max(mono_ms, 1e-30))
            if drop > ANTI_PHASE_DB:
                found.append(
                    f"anti-phase stereo: the channels cancel in the mono mix ({drop:.0f} dB "
                    f"below them)"
                )
        offset = self.mono_sum / self.frames
        if abs(offset) >= DC_LIMIT:
            found.append(f"DC offset of {offset:+.3f} full scale")
        clipped = self.clipped / (self.frames * self.channels)
        if clipped >= CLIP_FRACTION:
            found.append(f"heavy clipping: {100 * clipped:.1f}% of samples at full scale")
        return found


class MonoDecoder:
    """One audio file as mono float32 blocks at ``sample_rate``, decoded and resampled block by
    block, so memory holds one block whatever the file's length.

    ``blocks()`` raises AudioFileError (reason: one of AUDIO_REASONS) when the file cannot be
    used: on opening, or at the end for a file with NaN or infinite samples (after yielding the
    blocks before the first bad one). ``stats`` holds the sums of what was decoded.
    """

    def __init__(self, path: str | os.PathLike, sample_rate: int, block_frames: int = BLOCK_FRAMES):
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.block_frames = block_frames
        self.stats = SignalStats()
        self.expected_samples = 0  # from the header; 0 when the stream does not say

    def blocks(self) -> Iterator[np.ndarray]:
        path = self.path
        check_input_file(path)
        try:
            handle = sf.SoundFile(str(path))
        except Exception as error:  # noqa: BLE001  libsndfile raises several types
            raise AudioFileError(
                path, "unreadable", f"unreadable or not audio ({_one_line(error, path)})"
            ) from None
        with handle:
            if handle.frames == 0:
                raise AudioFileError(path, "empty", "no audio frames")
            resampler = StreamResampler(handle.samplerate, self.sample_rate)
            # Streams without a known length report a huge frame count.
            if handle.seekable() and handle.frames < 1 << 40:
                self.expected_samples = math.ceil(handle.frames * resampler.new / resampler.orig)
            self.stats = SignalStats(channels=handle.channels)
            buffer = np.empty((self.block_frames, handle.channels), dtype=np.float32)
            non_finite = 0
            while True:
                try:
                    block = handle.read(
                        self.block_frames, dtype="float32", always_2d=True, out=buffer
                    )
                except Exception as error:  # noqa: BLE001  a damaged file fails in many ways
                    raise AudioFileError(
                        path,
                        "unreadable",
                        f"decoding failed after {self.stats.frames} frames "
                        f"({_one_line(error, path)})",
                    ) from None
                if len(block) == 0:
                    break
                mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
                non_finite += int(np.count_nonzero(~np.isfinite(mono)))
                self.stats.add(block, mono)
                if non_finite == 0:
                    yield resampler.push(mono)
                if len(block) < self.block_frames:
                    break
        if self.stats.frames == 0:
            raise AudioFileError(path, "empty", "no audio frames")
        if non_finite:
            raise AudioFileError(path, "non-finite", f"{non_finite} NaN/inf samples")
        yield resampler.finish()

    def warn_if_odd(self) -> list[str]:
        """Log one warning naming the file and what is odd about it; returns the phrases."""
        found = self.stats.oddities()
        if found:
            log.warning("%s: %s", self.path, "; ".join(found))
        return found


def read_mono(
    path: str | os.PathLike, sample_rate: int, block_frames: int = BLOCK_FRAMES
) -> np.ndarray:
    """Any audio file -> mono float32 at ``sample_rate``, decoded and resampled block by block.

    Raises AudioFileError (reason: one of AUDIO_REASONS) when the file cannot be used; odd audio
    (anti-phase stereo, a DC offset, heavy clipping) is named in a warning.
    """
    decoder = MonoDecoder(path, sample_rate, block_frames)
    output: _Output | None = None
    for block in decoder.blocks():
        if output is None:
            output = _Output(decoder.expected_samples)
        output.append(block)
    decoder.warn_if_odd()
    return output.result()


def check_output_path(path: str | os.PathLike) -> Path:
    """Check before any work that a file can be written at ``path``; return it as a Path.

    Raises ValueError (one line naming the path) when ``path`` is a folder or another non-file,
    its folder cannot be created, or nothing can be written there (permission, read-only file
    system, full disk): found by creating and deleting a hidden probe file in the folder, which
    is what the real write will need.
    """
    path = Path(path)
    if str(path).endswith(os.sep) or path.is_dir():
        raise ValueError(f"{path}: is a folder; give a file name, e.g. {path / 'output.wav'}")
    if path.is_symlink() and not path.exists():
        raise ValueError(
            f"{path}: is a broken or looping symbolic link; remove it or pick another name"
        )
    if path.exists() and not path.is_file():
        raise ValueError(f"{path}: exists and is not a regular file")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ValueError(
            f"{path}: cannot create folder {folder}: a file of that name exists"
        ) from None
    except OSError as error:
        raise ValueError(
            f"{path}: cannot create folder {folder} ({error.strerror or error})"
        ) from None
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.probe-", dir=folder)
    except OSError as error:
        raise ValueError(f"{path}: cannot write in {folder} ({error.strerror or error})") from None
    os.close(fd)
    os.unlink(probe)
    return path


# ---------------------------------------------------------------------------------------------
# Writing


@dataclass(frozen=True)
class OutputFormat:
    """An audio format arrange can write: soundfile's container name and its subtypes."""

    extension: str
    container: str
    subtypes: tuple[str, ...]  # the first is the default

    @property
    def default_subtype(self) -> str:
        return self.subtypes[0]


OUTPUT_FORMATS = {
    fmt.extension: fmt
    for fmt in (
        OutputFormat(".wav", "WAV", ("PCM_16", "PCM_24", "FLOAT")),
        OutputFormat(".flac", "FLAC", ("PCM_16", "PCM_24")),
        OutputFormat(".ogg", "OGG", ("VORBIS",)),
    )
}
SUBTYPES = tuple(dict.fromkeys(t for fmt in OUTPUT_FORMATS.values() for t in fmt.subtypes))


def output_format(path: str | os.PathLike) -> OutputFormat:
    """The format an output name asks for; ValueError for an extension arrange cannot write."""
    extension = Path(path).suffix.lower()
    if extension not in OUTPUT_FORMATS:
        shown = extension or "(no extension)"
        raise ValueError(
            f"--output {path}: unknown audio format {shown!r}; use {', '.join(OUTPUT_FORMATS)}"
        )
    return OUTPUT_FORMATS[extension]


def output_subtype(fmt: OutputFormat, subtype: str | None) -> str:
    """`subtype`, or the format's default when None; ValueError when the format cannot hold it."""
    if subtype is None:
        return fmt.default_subtype
    if subtype.upper() not in fmt.subtypes:
        raise ValueError(
            f"--subtype {subtype}: {fmt.extension} files hold {' or '.join(fmt.subtypes)}"
        )
    return subtype.upper()


def write_audio(
    path: str | os.PathLike, audio: np.ndarray, sample_rate: int, subtype: str | None = None
) -> tuple[float, str]:
    """Atomic write (tmp + os.replace) in the format the name asks for.

    Returns (peak |sample| before any scaling, subtype written). Integer and Vorbis subtypes
    cannot hold |x| > 1: a louder output is scaled down to peak 0.99 (not clipped). Audio with
    NaN or Inf samples is refused (ValueError naming the first one and the count) and nothing
    is written: replacing them would hide a broken model behind a plausible file.
    """
    path = Path(path)
    fmt = output_format(path)
    subtype = output_subtype(fmt, subtype)
    audio = np.asarray(audio, dtype=np.float32)
    finite = np.isfinite(audio)
    if not finite.all():
        frames = ~finite if finite.ndim == 1 else ~finite.all(axis=-1)
        first = int(np.flatnonzero(frames)[0])
        raise ValueError(
            f"refusing to write {path}: {int(np.count_nonzero(~finite))} NaN or infinite "
            f"sample(s), the first at {first / sample_rate:.3f} s"
        )
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if subtype != "FLOAT" and peak > 1.0:
        log.warning(
            "output peak %.3f exceeds full scale: scaled down by %.2f dB to avoid clipping",
            peak,
            20 * math.log10(peak / 0.99),
        )
        audio = audio * (0.99 / peak)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        sf.write(str(tmp), audio, sample_rate, subtype=subtype, format=fmt.container)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return peak, subtype
