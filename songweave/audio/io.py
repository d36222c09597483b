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


def read_mono(
    path: str | os.PathLike, sample_rate: int, block_frames: int = BLOCK_FRAMES
) -> np.ndarray:
    """Any audio file -> mono float32 at ``sample_rate``, decoded and resampled block by block.

    Raises AudioFileError (reason: one of AUDIO_REASONS) when the file cannot be used.
    """
    path = Path(path)
    check_input_file(path)
    try:
        handle = sf.SoundFile(str(path))
    except Exception as error:  # noqa: BLE001  libsndfile raises several types; all mean unusable
        raise AudioFileError(
            path, "unreadable", f"unreadable or not audio ({_one_line(error, path)})"
        ) from None
    with handle:
        if handle.frames == 0:
            raise AudioFileError(path, "empty", "no audio frames")
        resampler = StreamResampler(handle.samplerate, sample_rate)
        # Streams without a known length report a huge frame count: grow instead.
        known = handle.seekable() and handle.frames < 1 << 40
        output = _Output(math.ceil(handle.frames * resampler.new / resampler.orig) if known else 0)
        buffer = np.empty((block_frames, handle.channels), dtype=np.float32)
        non_finite = 0
        decoded = 0
        while True:
            try:
                block = handle.read(block_frames, dtype="float32", always_2d=True, out=buffer)
            except Exception as error:  # noqa: BLE001  a damaged file fails mid-way in many ways
                raise AudioFileError(
                    path,
                    "unreadable",
                    f"decoding failed after {decoded} frames ({_one_line(error, path)})",
                ) from None
            if len(block) == 0:
                break
            decoded += len(block)
            mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
            bad = int(np.count_nonzero(~np.isfinite(mono)))
            non_finite += bad
            if non_finite == 0:
                output.append(resampler.push(mono))
            if len(block) < block_frames:
                break
    if decoded == 0:
        raise AudioFileError(path, "empty", "no audio frames")
    if non_finite:
        raise AudioFileError(path, "non-finite", f"{non_finite} NaN/inf samples")
    output.append(resampler.finish())
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
    cannot hold |x| > 1: a louder output is scaled down to peak 0.99 (not clipped).
    """
    path = Path(path)
    fmt = output_format(path)
    subtype = output_subtype(fmt, subtype)
    audio = np.nan_to_num(np.asarray(audio, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
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
