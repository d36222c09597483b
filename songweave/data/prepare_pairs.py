"""A folder of songs -> a folder of continuation (and cross-song) pairs (`creative-prepare-pairs
--layout pairs`; the command's flags are in data/prepare_cli.py, the default song store in
data/store_build.py).

Every audio file under DIR (recursively, any format libsndfile reads, any rate, any channel
count) is decoded, downmixed to mono and resampled to the target rate with torchaudio's
windowed-sinc (anti-aliased) resampler, block by block so a long multichannel file needs little
more memory than its mono result (audio_io.read_mono), then cut into consecutive,
non-overlapping segments of ``segment_seconds``. Pair i of a song is (segment i, segment i + 1):
the model sees a segment and learns its continuation.

``--pairing cross_song`` pairs each input segment with a segment of another song of the same
split instead (song and segment drawn with ``seed``); ``both`` writes the continuation pairs,
then as many cross-song pairs. Cross-song pairs need two songs in each split, so validation then
gets at least two songs when there are four or more.

Layout written (numbering is continuous per split, songs in sorted path order):

    DATA/train/pair_00000_input.wav, DATA/train/pair_00000_output.wav, ...
    DATA/val/pair_00000_input.wav, ...
    DATA/manifest.jsonl       one JSON object per pair (format: data/pair_manifest.py; keys
                              written: MANIFEST_KEYS); training reads the pairs from it
    DATA/dataset_info.json    sample rate, segment length, counts, seed (see ``_dataset_info``)

WAV files are mono at ``sample_rate``; subtype FLOAT (32-bit float) by default, so the pairs
hold exactly the resampled signal (no requantization, no clipping of resampler overshoot);
``--subtype PCM_16`` halves the disk size.

Rules:
- Split by song: whole songs go to val (chosen by ``seed`` among the songs that gave pairs),
  so no song feeds both splits. About ``val_fraction`` of those songs are val, and at least
  one when there are two or more songs and ``val_fraction > 0``.
- A pair is skipped when either segment's RMS is below ``min_rms`` (default 1e-3, about
  -60 dBFS: digital silence, fade-outs and lead-in gaps, not quiet music).
- Bad files never stop the run: empty, unreadable / not audio (includes truncated headers and
  text files named .wav), non-finite samples, too short for two segments, or silent throughout
  are skipped, named and counted in the closing summary.
- Files and folders whose name starts with "." are ignored (macOS "._x.wav" shadows, our own
  temporary folders).
- The output is written into a hidden sibling folder and moved into place at the end
  (``os.replace``), so an interrupted run never leaves a half-written or mixed DATA folder.
  A non-empty DATA is refused unless ``--overwrite``, which replaces it as a whole.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from songweave.audio.alignment import (
    AlignmentPlan,
    onset_advance,
    plan_alignment,
    stretch_and_shift,
)
from songweave.audio.analysis import SongAnalysis, analyze_song
from songweave.audio.io import AudioFileError, MonoDecoder, read_mono
from songweave.data.pair_manifest import MANIFEST_NAME, write_manifest
from songweave.data.pairs_config import (
    SKIP_REASONS,
    SPLITS,
    PrepareConfig,
    PrepareSummary,
    SkippedFile,
)
from songweave.data.song_files import assign_splits, audio_extensions, find_audio_files

log = logging.getLogger(__name__)


_PARTIAL_TAG = ".partial-"


@dataclass
class _SongPairs:
    source: str
    pair_ids: list[int]  # i of (segment i, segment i + 1)
    rms: np.ndarray  # per segment
    staged: list[tuple[Path, Path]]  # written input/output files in the staging folder
    analysis: SongAnalysis | None = None  # tempo, beats, key (cross-song alignment only)


class _Skip(Exception):
    """A song that gives no pairs: reason is a key of SKIP_REASONS."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def load_mono(path: Path, sample_rate: int) -> np.ndarray:
    """Decode, downmix to mono and resample (anti-aliased windowed sinc) to sample_rate, block
    by block in bounded memory (audio_io.read_mono).

    Raises _Skip with a reason key when the file cannot be used.
    """
    try:
        return read_mono(path, sample_rate)
    except AudioFileError as error:
        raise _as_skip(error) from None


def _as_skip(error: AudioFileError) -> _Skip:
    return _Skip(error.reason if error.reason in SKIP_REASONS else "unreadable", error.detail)


@dataclass
class _StagedSong:
    """One song cut and written under temporary names, or why it gives no pairs."""

    pairs: _SongPairs | None
    skip: _Skip | None
    decoded: bool  # read to the end without an error (a too-short or silent song was)
    seconds: float = 0.0  # decoded duration
    silent_pairs: int = 0


class _Segmenter:
    """Fixed-length segments from blocks of any length, one segment buffer in memory."""

    def __init__(self, length: int):
        self.buffer = np.empty(length, dtype=np.float32)
        self.filled = 0
        self.samples = 0

    def push(self, block: np.ndarray) -> Iterator[np.ndarray]:
        self.samples += len(block)
        while len(block):
            take = min(len(block), len(self.buffer) - self.filled)
            self.buffer[self.filled : self.filled + take] = block[:take]
            self.filled += take
            block = block[take:]
            if self.filled == len(self.buffer):
                self.filled = 0
                yield self.buffer


# Tempo and key come from a song's first minute: bounded memory, and what a listener hears
# first. Songs without a usable analysis give unaligned cross-song pairs (counted).
ANALYSIS_SECONDS = 60.0


def aligns(config: PrepareConfig) -> bool:
    return config.align and config.pairing in ("cross_song", "both")


class _Head:
    """The first `length` samples of a song, kept while it streams by."""

    def __init__(self, length: int):
        self.buffer = np.empty(length, dtype=np.float32)
        self.filled = 0

    def push(self, block: np.ndarray) -> None:
        take = min(len(block), len(self.buffer) - self.filled)
        if take > 0:
            self.buffer[self.filled : self.filled + take] = block[:take]
            self.filled += take

    def analysis(self, rel: str, config: PrepareConfig) -> SongAnalysis | None:
        if not len(self.buffer):
            return None
        try:
            return analyze_song(self.buffer[: self.filled], config.sample_rate)
        except ValueError as error:
            log.info("%s: no tempo or key (%s): its cross-song pairs stay unaligned", rel, error)
            return None


def stage_song(
    path: Path, rel: str, prefix: Path, config: PrepareConfig, stop: threading.Event
) -> _StagedSong:
    """Decode one song block by block, write each segment as it completes, then keep the
    segments its audible pairs use: memory holds one block and one segment whatever the song's
    length. Returns the staged pairs, or the reason the song gives none (its files removed)."""
    seg = config.segment_samples
    decoder = MonoDecoder(path, config.sample_rate)
    segmenter = _Segmenter(seg)
    written: list[Path] = []
    rms: list[float] = []
    silent = 0
    head = _Head(int(ANALYSIS_SECONDS * config.sample_rate) if aligns(config) else 0)
    try:
        for block in decoder.blocks():
            if stop.is_set():
                raise KeyboardInterrupt
            head.push(block)
            for segment in segmenter.push(block):
                written.append(prefix.with_name(f"{prefix.name}_{len(written):06d}.wav"))
                write_wav(written[-1], segment, config.sample_rate, config.subtype)
                rms.append(float(np.sqrt(np.mean(np.square(segment, dtype=np.float64)))))
        decoder.warn_if_odd()
        seconds = segmenter.samples / config.sample_rate
        if len(written) < 2:
            raise _Skip("too-short", f"{seconds:.2f} s < 2 x {config.segment_seconds:g} s")
        pair_ids, silent = select_pairs(np.asarray(rms), config.min_rms, config.max_pairs_per_song)
        if not pair_ids:
            raise _Skip("silent", f"{silent} pairs below min_rms {config.min_rms:g}")
    except (_Skip, AudioFileError) as error:
        for file in written:
            file.unlink(missing_ok=True)
        if isinstance(error, AudioFileError):
            return _StagedSong(None, _as_skip(error), decoded=False)
        return _StagedSong(None, error, True, segmenter.samples / config.sample_rate, silent)
    except BaseException:
        for file in written:
            file.unlink(missing_ok=True)
        raise
    # Each segment is written once even when it serves two pairs (target of pair i, input of
    # pair i + 1); _finalize links it under both names.
    used = {k for i in pair_ids for k in (i, i + 1)}
    for index, file in enumerate(written):
        if index not in used:
            file.unlink()
    staged = [(written[i], written[i + 1]) for i in pair_ids]
    pairs = _SongPairs(rel, pair_ids, np.asarray(rms), staged, head.analysis(rel, config))
    return _StagedSong(pairs, None, True, seconds, silent)


def stage_in_order(
    files: list[Path], songs_dir: Path, staging: Path, config: PrepareConfig
) -> Iterator[tuple[Path, _StagedSong]]:
    """Yield (path, staged song) in the order of `files`, `config.workers` songs at a time in
    background threads (each holds one block and one segment). Closing the generator stops
    the threads at their next block."""
    stop = threading.Event()

    def work(index: int, path: Path) -> _StagedSong:
        rel = path.relative_to(songs_dir).as_posix()
        return stage_song(path, rel, staging / f"{index:06d}", config, stop)

    if config.workers <= 1:
        for index, path in enumerate(files):
            yield path, work(index, path)
        return
    pool = ThreadPoolExecutor(max_workers=config.workers)
    try:
        remaining = iter(enumerate(files))
        pending: deque = deque()
        for index, path in remaining:
            pending.append((path, pool.submit(work, index, path)))
            if len(pending) >= 2 * config.workers:
                break
        while pending:
            path, future = pending.popleft()
            following = next(remaining, None)
            if following is not None:
                pending.append((following[1], pool.submit(work, *following)))
            yield path, future.result()
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


def select_pairs(rms: np.ndarray, min_rms: float, max_pairs: int | None) -> tuple[list[int], int]:
    """Pair ids (segment i, i + 1) whose both sides are audible, and how many were silent.

    With max_pairs the kept pairs are spread evenly over the song rather than taken from the
    start, so a cap does not bias the data towards intros.
    """
    audible = np.minimum(rms[:-1], rms[1:]) >= min_rms
    ids = np.flatnonzero(audible)
    silent = int(len(audible) - len(ids))
    if max_pairs is not None and len(ids) > max_pairs:
        ids = ids[np.round(np.linspace(0, len(ids) - 1, max_pairs)).astype(int)]
    return ids.tolist(), silent


def prepare_pairs(
    songs_dir: str | os.PathLike, out_dir: str | os.PathLike, config: PrepareConfig | None = None
) -> PrepareSummary:
    """Write DATA/{train,val}/pair_NNNNN_{input,output}.wav + manifest.jsonl + dataset_info.json.

    Raises FileNotFoundError / NotADirectoryError for a missing songs folder, FileExistsError
    for a non-empty out_dir without overwrite, ValueError for bad options or when no pair at
    all could be made (nothing is written then).
    """
    config = config or PrepareConfig()
    config.validate()
    start = time.perf_counter()
    songs_dir = Path(songs_dir)
    out_dir = Path(out_dir)
    if not songs_dir.exists():
        raise FileNotFoundError(f"--songs folder not found: {songs_dir}")
    if not songs_dir.is_dir():
        raise NotADirectoryError(f"--songs is not a folder: {songs_dir}")
    _check_out_dir(out_dir, songs_dir, config.overwrite)

    files = find_audio_files(songs_dir, exclude=(out_dir,))
    if not files:
        extensions = ", ".join(sorted(audio_extensions()))
        raise ValueError(f"no audio files ({extensions}) under {songs_dir}")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _warn_leftovers(out_dir)
    tag = f"{_PARTIAL_TAG}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    partial = out_dir.parent / f".{out_dir.name}{tag}"
    summary = PrepareSummary(out_dir=out_dir, songs_found=len(files))
    try:
        staging = partial / "staging"
        staging.mkdir(parents=True)
        songs = _stage_songs(files, songs_dir, staging, config, summary)
        if not songs:
            reasons = ", ".join(
                f"{len(v)} {k}" for k, v in sorted(summary.skipped_by_reason().items())
            )
            raise ValueError(
                f"no pairs could be made from {len(files)} audio files under "
                f"{songs_dir} (skipped: {reasons or 'none'}; "
                f"silent pairs: {summary.silent_pairs_skipped})"
            )
        _finalize(songs, partial, config, summary)
        shutil.rmtree(staging)
        _move_into_place(partial, out_dir, config.overwrite)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    summary.elapsed = time.perf_counter() - start
    return summary


def _check_out_dir(out_dir: Path, songs_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"--out exists and is not a folder: {out_dir}")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"--out folder {out_dir} is not empty; pass --overwrite to replace it"
            )
        if songs_dir.resolve().is_relative_to(out_dir.resolve()):
            raise ValueError(
                f"--songs {songs_dir} is inside --out {out_dir}; --overwrite would delete it"
            )


def _warn_leftovers(out_dir: Path) -> None:
    for leftover in out_dir.parent.glob(f".{out_dir.name}{_PARTIAL_TAG}*"):
        log.warning("found %s from an interrupted run; it is not used and can be deleted", leftover)


def _stage_songs(
    files: list[Path],
    songs_dir: Path,
    staging: Path,
    config: PrepareConfig,
    summary: PrepareSummary,
) -> list[_SongPairs]:
    """Decode every song and write its pairs under temporary names (split not known yet)."""
    songs: list[_SongPairs] = []
    bar = tqdm(
        total=len(files),
        unit="song",
        desc="prepare_pairs",
        disable=not config.progress,
        dynamic_ncols=True,
    )
    staged = stage_in_order(files, songs_dir, staging, config)
    try:
        for path, song in staged:
            bar.update(1)
            rel = path.relative_to(songs_dir).as_posix()
            summary.silent_pairs_skipped += song.silent_pairs
            if song.decoded:
                summary.songs_read += 1
                summary.seconds_read += song.seconds
            if song.skip is not None:
                summary.skipped.append(SkippedFile(rel, song.skip.reason, song.skip.detail))
                continue
            songs.append(song.pairs)
            bar.set_postfix(pairs=sum(len(s.pair_ids) for s in songs), refresh=False)
    finally:
        staged.close()  # stop and join the threads even when interrupted
        bar.close()
    return songs


def _finalize(
    songs: list[_SongPairs], partial: Path, config: PrepareConfig, summary: PrepareSummary
) -> None:
    """Assign splits, give the staged segments their final names, write manifest and info."""
    crossed = config.pairing in ("cross_song", "both")
    splits = assign_splits(
        [s.source for s in songs],
        config.val_fraction,
        config.seed,
        min_songs_per_split=2 if crossed else 1,
    )
    for split in SPLITS:
        (partial / split).mkdir()
    by_split = {split: [s for s in songs if splits[s.source] == split] for split in SPLITS}
    if crossed:
        _check_cross_song_splits(by_split, config.pairing)
    duration = config.segment_samples / config.sample_rate
    pairs = _PairWriter(partial, config)
    for split in SPLITS:  # songs are already in sorted source order
        for song in by_split[split]:
            summary.songs_per_split[split] += 1
            covered = {k for i in song.pair_ids for k in (i, i + 1)}
            summary.seconds_in_pairs += len(covered) * duration
        if config.pairing in ("continuation", "both"):
            for song in by_split[split]:
                for i, (staged_in, staged_out) in zip(song.pair_ids, song.staged):
                    pairs.add(split, (song, i, staged_in), (song, i + 1, staged_out))
        if crossed and len(by_split[split]) >= 2:
            rng = np.random.default_rng([config.seed, SPLITS.index(split)])
            summary.cross_song_pairs[split] = _add_cross_song_pairs(
                pairs, split, by_split[split], rng
            )
    summary.pairs_per_split.update(pairs.next_index)
    # Manifest lists train then val, each in index order, so it is stable for a given seed.
    write_manifest(partial / MANIFEST_NAME, pairs.records)
    with open(partial / "dataset_info.json", "w") as f:
        json.dump(_dataset_info(config, summary), f, indent=2)
        f.write("\n")


def _check_cross_song_splits(by_split: dict[str, list[_SongPairs]], pairing: str) -> None:
    for split, members in by_split.items():
        if len(members) != 1:
            continue
        if pairing == "cross_song":
            raise ValueError(
                f"--pairing cross_song needs 2 songs in each split, split {split} has "
                f"1 ({members[0].source}); add songs, or use --pairing both"
            )
        log.warning(
            "split %s has one song (%s): continuation pairs only, no cross-song pairs",
            split,
            members[0].source,
        )


def _add_cross_song_pairs(
    pairs: _PairWriter, split: str, members: list[_SongPairs], rng: np.random.Generator
) -> int:
    """One cross-song pair per input segment: a seeded pick of another song and of one of its
    pairs' first segment; aligned to the input song when both songs have an analysis."""
    count = 0
    for song in members:
        others = [other for other in members if other is not song]
        for i, (staged_in, _) in zip(song.pair_ids, song.staged):
            other = others[int(rng.integers(len(others)))]
            pick = int(rng.integers(len(other.pair_ids)))
            seg_id = other.pair_ids[pick]
            target = pairs.aligned_target(song, staged_in, other, pick)
            pairs.add(split, (song, i, staged_in), (other, seg_id, target.path), target.plan)
            count += 1
    return count


@dataclass(frozen=True)
class _AlignedTarget:
    path: Path  # the target segment's file in the staging folder
    plan: AlignmentPlan | None  # None: taken as it is


def read_wav(path: Path) -> np.ndarray:
    audio, _ = sf.read(str(path), dtype="float32", always_2d=False)
    return audio


class _PairWriter:
    """Links staged segments under pair_NNNNN names, numbered per split; collects the records."""

    def __init__(self, partial: Path, config: PrepareConfig) -> None:
        self.partial, self.config = partial, config
        self.next_index = {s: 0 for s in SPLITS}
        self.records: list[dict] = []
        self.aligned = 0  # cross-song targets aligned so far

    def aligned_target(
        self, song: _SongPairs, input_file: Path, other: _SongPairs, pick: int
    ) -> _AlignedTarget:
        """The target segment of `other` (its pair `pick`'s first segment) brought to `song`'s
        tempo and a compatible key, its onsets on the input segment's beats (the lag that best
        correlates their onset envelopes, measured on these very segments, so an error in a
        song's tempo does not add up along it): cut from the stretched pair of segments and
        written to the staging folder."""
        first, second = other.staged[pick]
        if not aligns(self.config) or song.analysis is None or other.analysis is None:
            return _AlignedTarget(first, None)
        plan = plan_alignment(song.analysis, other.analysis)
        region = np.concatenate([read_wav(first), read_wav(second)])
        rate, length = self.config.sample_rate, self.config.segment_samples
        stretched = stretch_and_shift(region, rate, plan)
        advance = 0
        if plan.tempo_changed:
            period = 60.0 / (other.analysis.tempo_bpm * plan.stretch)
            seconds = onset_advance(read_wav(input_file), stretched, rate, period)
            advance = int(round(seconds * rate))
        audio = stretched[advance : advance + length]
        audio = np.pad(audio, (0, length - len(audio)))
        self.aligned += 1
        path = first.with_name(f"aligned_{self.aligned:06d}.wav")
        write_wav(path, audio, rate, self.config.subtype)
        return _AlignedTarget(path, plan)

    def add(
        self,
        split: str,
        source: tuple[_SongPairs, int, Path],
        target: tuple[_SongPairs, int, Path],
        plan: AlignmentPlan | None = None,
    ) -> None:
        (in_song, in_seg, in_file), (out_song, out_seg, out_file) = source, target
        index = self.next_index[split]
        self.next_index[split] += 1
        names = (f"{split}/pair_{index:05d}_input.wav", f"{split}/pair_{index:05d}_output.wav")
        for staged_file, name in zip((in_file, out_file), names):
            _link_or_copy(staged_file, self.partial / name)
        continuation = in_song is out_song and out_seg == in_seg + 1
        duration = self.config.segment_samples / self.config.sample_rate
        record = {
            "split": split,
            "index": index,
            "input_file": names[0],
            "output_file": names[1],
            "pairing": "continuation" if continuation else "cross_song",
            "input_source": in_song.source,
            "target_source": out_song.source,
        }
        if continuation:
            record.update(source=in_song.source, source_pair=int(in_seg))
        record.update(
            {
                "input_start": round(in_seg * duration, 6),
                "target_start": round(out_seg * duration, 6),
                "duration": round(duration, 6),
                "num_samples": self.config.segment_samples,
                "sample_rate": self.config.sample_rate,
                "input_rms": round(float(in_song.rms[in_seg]), 6),
                "target_rms": round(float(out_song.rms[out_seg]), 6),
            }
        )
        if plan is not None:
            record.update(
                target_stretch=round(plan.stretch, 6),
                target_semitones=plan.semitones,
                input_tempo_bpm=round(plan.input.tempo_bpm, 3),
                input_key=f"{plan.input.key} {plan.input.mode}",
            )
        self.records.append(record)


def _dataset_info(config: PrepareConfig, summary: PrepareSummary) -> dict:
    # No paths or timestamps: two runs with the same songs and seed give identical files.
    return {
        "format": "wav_pairs",
        "version": 1,
        "sample_rate": config.sample_rate,
        "segment_seconds": config.segment_seconds,
        "segment_samples": config.segment_samples,
        "subtype": config.subtype,
        "channels": 1,
        "seed": config.seed,
        "val_fraction": config.val_fraction,
        "min_rms": config.min_rms,
        "max_pairs_per_song": config.max_pairs_per_song,
        "pairing": config.pairing,
        "aligned_cross_song": aligns(config),
        "pairs": dict(summary.pairs_per_split),
        "songs": dict(summary.songs_per_split),
    }


def write_wav(path: Path, audio: np.ndarray, sample_rate: int, subtype: str) -> None:
    """Mono WAV whose bytes depend only on the samples (reproducible runs, stable hashes).

    libsndfile adds a PEAK chunk with a timestamp to float WAVs, so FLOAT is written here
    directly: a WAVE_FORMAT_IEEE_FLOAT fmt chunk, the fact chunk non-PCM formats carry, data.
    PCM subtypes have no such chunk and go through soundfile (which clips to [-1, 1]).
    """
    if subtype != "FLOAT":
        sf.write(str(path), audio, sample_rate, subtype=subtype, format="WAV")
        return
    data = np.asarray(audio, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHHH", 3, 1, sample_rate, 4 * sample_rate, 4, 32, 0)
    fact = struct.pack("<I", len(data) // 4)
    chunks = b"".join(
        tag + struct.pack("<I", len(body)) + body
        for tag, body in ((b"fmt ", fmt), (b"fact", fact), (b"data", data))
    )
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks)


def _link_or_copy(src: Path, dst: Path) -> None:
    # A segment used by two pairs (target of pair i, input of pair i + 1) becomes two files;
    # hard links keep that free on disk. Fall back to a copy where links are not supported.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _move_into_place(partial: Path, out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists():
        if any(out_dir.iterdir()) and not overwrite:
            # Another run finished first while we were working.
            raise FileExistsError(
                f"--out folder {out_dir} is not empty; pass --overwrite to replace it"
            )
        # Move the old folder aside first: the new one is never mixed with it, and the old one
        # is only deleted once the new one is in place.
        old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out_dir, old)
        os.replace(partial, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, out_dir)
