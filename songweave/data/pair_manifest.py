"""DATA/manifest.jsonl: which input segment is paired with which target segment, per split.

One JSON object per line; blank lines are ignored. Keys:

    required
      split          "train", "val" or any other split name (the `--split` of creative-evaluate)
      input_file     the input segment: a path relative to DATA, or absolute
      output_file    the target segment: relative to DATA, or absolute
    optional (provenance; readers keep them, training does not need them)
      pairing        "continuation" (target = the next segment of the same song) or
                     "cross_song" (target = a segment of another song)
      input_source   song the input segment comes from (e.g. its path under --songs)
      target_source  song the target segment comes from
      input_start    seconds into input_source where the input segment starts
      target_start   seconds into target_source where the target segment starts
      source         shorthand for input_source = target_source (continuation pairs)
      index          the NNNNN of pair_NNNNN_{input,output}.wav, when the files are named so
      ...            anything else (creative-prepare-pairs also writes duration, num_samples,
                     sample_rate, input_rms, target_rms, and source_pair for continuation pairs)

The pairs of a split are its lines in file order. The same file may appear in several pairs.
Every segment must be mono at the codec's rate, and all segments of a split the same length
(creative-prepare-pairs writes them so); the dataset checks this when it builds its latent cache.

A hand-written example (two songs crossed both ways, paths relative to DATA and absolute):

    {"split": "train", "input_file": "a/s0.wav", "output_file": "b/s3.wav", "pairing": "cross_song"}
    {"split": "train", "input_file": "b/s3.wav", "output_file": "/music/cuts/a_s1.wav"}
    {"split": "val", "input_file": "c/s0.wav", "output_file": "c/s1.wav"}

Library use: `read_manifest(folder, split) -> list[ManifestPair]` (raises ManifestError naming
the file and line), `write_manifest(path, records)`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import soundfile as sf

from songweave.runtime.formatting import loads_finite

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"
REQUIRED_KEYS = ("split", "input_file", "output_file")
PAIRINGS = ("continuation", "cross_song")
_TEXT_KEYS = ("pairing", "input_source", "target_source", "source")
_SECONDS_KEYS = ("input_start", "target_start")


class ManifestError(ValueError):
    """A bad manifest line; the message names the file and the line number."""


@dataclass(frozen=True)
class ManifestPair:
    split: str
    input_path: Path  # resolved against the dataset folder
    output_path: Path
    line: int  # 1-based line number in the manifest
    pairing: str | None = None
    input_source: str | None = None
    target_source: str | None = None
    input_start: float | None = None
    target_start: float | None = None


def manifest_path(folder: str | os.PathLike) -> Path:
    return Path(folder) / MANIFEST_NAME


def _resolve(folder: Path, name: str) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() else folder / path


def _parse_line(text: str, where: str, folder: Path, line: int) -> ManifestPair:
    try:
        record = loads_finite(text)
    except json.JSONDecodeError as error:
        raise ManifestError(
            f"{where}: not valid JSON ({error.msg} at column {error.colno})"
        ) from None
    except ValueError as error:
        raise ManifestError(f"{where}: {error}") from None
    if not isinstance(record, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in record]
    if missing:
        raise ManifestError(
            f"{where}: missing key {', '.join(repr(k) for k in missing)} "
            f"(required: {', '.join(REQUIRED_KEYS)})"
        )
    for key in REQUIRED_KEYS:
        if not isinstance(record[key], str) or not record[key].strip():
            raise ManifestError(f"{where}: {key!r} must be a non-empty string, got {record[key]!r}")
    for key in _TEXT_KEYS:
        if record.get(key) is not None and not isinstance(record[key], str):
            raise ManifestError(f"{where}: {key!r} must be a string, got {record[key]!r}")
    if record.get("pairing") is not None and record["pairing"] not in PAIRINGS:
        raise ManifestError(
            f"{where}: pairing {record['pairing']!r} is not one of {', '.join(PAIRINGS)}"
        )
    seconds: dict[str, float | None] = {}
    for key in _SECONDS_KEYS:
        value = record.get(key)
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
        ):
            raise ManifestError(f"{where}: {key!r} must be a number of seconds >= 0, got {value!r}")
        seconds[key] = None if value is None else float(value)
    return ManifestPair(
        split=record["split"],
        input_path=_resolve(folder, record["input_file"]),
        output_path=_resolve(folder, record["output_file"]),
        line=line,
        pairing=record.get("pairing"),
        input_source=record.get("input_source", record.get("source")),
        target_source=record.get("target_source", record.get("source")),
        **seconds,
    )


def read_manifest(
    folder: str | os.PathLike, split: str | None = None, check_files: bool = True
) -> list[ManifestPair]:
    """Pairs of FOLDER/manifest.jsonl (of one split, or all), in file order.

    Every line is parsed and checked, whatever its split. With check_files, the files of the
    returned pairs must exist (a stat per file, no audio is opened). Raises FileNotFoundError
    when there is no manifest and ManifestError (a ValueError) for a bad line.
    """
    folder = Path(folder)
    path = manifest_path(folder)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"no {MANIFEST_NAME} in {folder}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ManifestError(f"{path}: unreadable ({error})") from None
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        pair = _parse_line(line, where, folder, number)
        if split is not None and pair.split != split:
            continue
        if check_files:
            for key, file in (("input_file", pair.input_path), ("output_file", pair.output_path)):
                if not file.is_file():
                    raise ManifestError(f"{where}: {key} {file} does not exist")
        pairs.append(pair)
    return pairs


def write_manifest(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> int:
    """Write records as JSON lines (after checking each has the required keys); returns count."""
    lines = []
    for number, record in enumerate(records, 1):
        missing = [key for key in REQUIRED_KEYS if not record.get(key)]
        if missing:
            raise ValueError(f"manifest record {number} lacks {', '.join(missing)}")
        lines.append(json.dumps(record) + "\n")
    Path(path).write_text("".join(lines))
    return len(lines)


# ----------------------------------------------------------------------------- pairs of a split

PAIR_PATTERN = re.compile(r"^pair_(\d+)_(input|output)\.wav$")


@dataclass(frozen=True)
class WavPair:
    number: int  # the NNNNN of the file names; with a manifest, the position in the split
    input_path: Path
    output_path: Path


# ----------------------------------------------------------------------------- pair files


def list_pairs(split_dir: Path) -> list[WavPair]:
    """Pairs of one split (DATA/<split>), in order. Opens no audio file.

    With DATA/manifest.jsonl (format above): its lines of this split, in file order, number =
    position among them; any file anywhere may be paired with any other. Without one (datasets
    older than the manifest): pair_NNNNN_input.wav with pair_NNNNN_output.wav in DATA/<split>,
    sorted by NNNNN.
    """
    folder, split = split_dir.parent, split_dir.name
    if manifest_path(folder).is_file():
        return _manifest_pairs(folder, split)
    # Debug level: the launcher lists the pairs before any process starts, and again per split.
    log.debug(
        "%s: no %s, pairing pair_NNNNN_input.wav with pair_NNNNN_output.wav by file name",
        folder,
        MANIFEST_NAME,
    )
    return _file_name_pairs(split_dir)


def split_has_pairs(folder: str | os.PathLike, split: str) -> bool:
    """Whether DATA has pairs of `split`: manifest lines of it, else pair_*_input.wav files.

    Cheap (no audio opened, no file checked); a bad manifest line raises ManifestError here.
    """
    folder = Path(folder)
    if manifest_path(folder).is_file():
        return bool(read_manifest(folder, split, check_files=False))
    return any((folder / split).glob("pair_*_input.wav"))


def _manifest_pairs(folder: Path, split: str) -> list[WavPair]:
    entries = read_manifest(folder, split)
    if not entries:
        raise ValueError(f"{manifest_path(folder)}: no pairs of split {split!r}")
    return [
        WavPair(number, entry.input_path, entry.output_path) for number, entry in enumerate(entries)
    ]


def _file_name_pairs(split_dir: Path) -> list[WavPair]:
    if not split_dir.is_dir():
        raise FileNotFoundError(
            f"split folder {split_dir} does not exist "
            f"(make it with creative-prepare-pairs --out {split_dir.parent})"
        )
    found: dict[str, dict[str, Path]] = {}
    ignored = 0
    for path in split_dir.iterdir():
        match = PAIR_PATTERN.match(path.name)
        if match is None:
            ignored += path.suffix.lower() == ".wav"
            continue
        found.setdefault(match.group(1), {})[match.group(2)] = path
    if ignored:
        log.warning(
            "%s: ignored %d .wav files not named pair_NNNNN_{input,output}.wav", split_dir, ignored
        )
    pairs = []
    for number in sorted(found, key=lambda s: (int(s), s)):
        roles = found[number]
        for role, partner in (("input", "output"), ("output", "input")):
            if role in roles and partner not in roles:
                raise ValueError(
                    f"{roles[role]}: partner file pair_{number}_{partner}.wav is missing"
                )
        pairs.append(WavPair(int(number), roles["input"], roles["output"]))
    if not pairs:
        raise ValueError(
            f"{split_dir}: no pair_NNNNN_input.wav / pair_NNNNN_output.wav files "
            "(make them with creative-prepare-pairs)"
        )
    return pairs


def fingerprint_pairs(pairs: list[WavPair]) -> str:
    """Hash of names, sizes and mtimes: cheap (stat only) and changes when any file is rewritten."""
    digest = hashlib.sha256()
    for pair in pairs:
        for path in (pair.input_path, pair.output_path):
            stat = path.stat()
            digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _wav_info(path: Path) -> Any:
    try:
        return sf.info(str(path))
    except Exception as exc:  # libsndfile reports every kind of bad file as a RuntimeError subclass
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path}: unreadable audio file ({message})") from None


def validate_pairs(pairs: list[WavPair], sample_rate: int) -> int:
    """Check every pair's headers (soundfile.info only); return the common length in samples."""
    expected: tuple[Path, int] | None = None
    for pair in pairs:
        lengths = []
        for path in (pair.input_path, pair.output_path):
            info = _wav_info(path)
            if info.samplerate != sample_rate:
                raise ValueError(
                    f"{path}: sample rate {info.samplerate} Hz, the codec expects {sample_rate} Hz "
                    f"(re-run creative-prepare-pairs --sample_rate {sample_rate})"
                )
            if info.channels != 1:
                raise ValueError(
                    f"{path}: {info.channels} channels, expected mono "
                    "(creative-prepare-pairs downmixes)"
                )
            if info.frames <= 0:
                raise ValueError(f"{path}: empty audio file")
            lengths.append(info.frames)
        if lengths[0] != lengths[1]:
            raise ValueError(
                f"{pair.output_path}: {lengths[1]} samples, but its partner "
                f"{pair.input_path.name} has {lengths[0]}"
            )
        if expected is None:
            expected = (pair.input_path, lengths[0])
        elif lengths[0] != expected[1]:
            raise ValueError(
                f"{pair.input_path}: {lengths[0]} samples, "
                f"but {expected[0].name} has {expected[1]}; "
                "all pairs of a split must have the same length"
            )
    assert expected is not None  # list_pairs never returns an empty list
    return expected[1]
