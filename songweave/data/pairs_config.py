"""The settings and the summary of a pair-folder build (data/prepare_pairs.py), and the names it
writes: why a song gave no pairs, the manifest keys, the splits and pairings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

from songweave.audio.ranges import check_sample_rate, check_segment_seconds

# Why a song gave no pairs. Keys are stable (tests and summaries use them).
SKIP_REASONS: dict[str, str] = {
    "empty": "empty file",
    "unreadable": "unreadable or not audio",
    "non-finite": "NaN or infinite samples",
    "too-short": "shorter than two segments",
    "silent": "every pair below min_rms",
}

# The manifest format (required keys, paths) is defined in data/pair_manifest.py; these are the
# keys this tool writes.
MANIFEST_KEYS = (
    "split",  # "train" | "val"
    "index",  # pair number within the split (the NNNNN of the file names)
    "input_file",  # path relative to DATA, e.g. "train/pair_00000_input.wav"
    "output_file",  # path relative to DATA, the target segment
    "pairing",  # "continuation" (next segment, same song) | "cross_song" (another song)
    "input_source",  # song of the input segment, path relative to --songs (POSIX separators)
    "target_source",  # song of the target segment
    "source",  # continuation pairs only: the song (= input_source = target_source)
    "source_pair",  # continuation pairs only: i for the pair (segment i, segment i + 1)
    "input_start",  # seconds into input_source where the input segment starts
    "target_start",  # seconds into target_source where the target segment starts
    "duration",  # seconds per segment (input and target are the same length)
    "num_samples",  # samples per segment at sample_rate
    "sample_rate",
    "input_rms",
    "target_rms",
)

SPLITS = ("train", "val")
PAIRINGS = ("continuation", "cross_song", "both")


@dataclass
class PrepareConfig:
    segment_seconds: float = 4.0
    sample_rate: int = 24000
    val_fraction: float = 0.1
    max_pairs_per_song: int | None = None  # None = every pair; else N evenly spread over the song
    seed: int = 0
    min_rms: float = 1e-3
    subtype: str = "FLOAT"  # soundfile WAV subtype of the written pairs: FLOAT | PCM_16 | PCM_24
    overwrite: bool = False
    progress: bool = True  # tqdm bar over songs
    workers: int = 2  # decode threads (libsndfile and torch release the GIL); 1 = serial
    pairing: str = "continuation"  # continuation | cross_song | both (see PAIRINGS)
    align: bool = True  # cross-song targets brought to the input song's tempo, key and beats

    def validate(self) -> None:
        check_segment_seconds(self.segment_seconds)
        check_sample_rate(self.sample_rate)
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"--val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.max_pairs_per_song is not None and self.max_pairs_per_song < 1:
            raise ValueError(f"--max_pairs_per_song must be >= 1, got {self.max_pairs_per_song}")
        if self.min_rms < 0:
            raise ValueError(f"--min_rms must be >= 0, got {self.min_rms}")
        if self.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {self.workers}")
        if self.pairing not in PAIRINGS:
            raise ValueError(
                f"--pairing must be one of {', '.join(PAIRINGS)}, got {self.pairing!r}"
            )
        if not sf.check_format("WAV", self.subtype):
            raise ValueError(f"--subtype {self.subtype} is not a WAV subtype soundfile can write")

    @property
    def segment_samples(self) -> int:
        return int(round(self.segment_seconds * self.sample_rate))


@dataclass
class SkippedFile:
    path: str  # relative to the songs folder
    reason: str  # a key of SKIP_REASONS
    detail: str  # one line


@dataclass
class PrepareSummary:
    out_dir: Path
    songs_found: int = 0
    songs_read: int = 0  # decoded without error (some may still give no pairs)
    songs_per_split: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SPLITS})
    pairs_per_split: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SPLITS})
    cross_song_pairs: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SPLITS})
    silent_pairs_skipped: int = 0
    skipped: list[SkippedFile] = field(default_factory=list)
    seconds_read: float = 0.0  # duration of all decoded songs
    seconds_in_pairs: float = 0.0  # distinct audio covered by the written pairs
    elapsed: float = 0.0

    @property
    def num_pairs(self) -> int:
        return sum(self.pairs_per_split.values())

    @property
    def speed(self) -> float:
        """Seconds of audio processed per second of wall time (x real time)."""
        return self.seconds_read / self.elapsed if self.elapsed > 0 else float("inf")

    def skipped_by_reason(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for item in self.skipped:
            out.setdefault(item.reason, []).append(item.path)
        return out

    def format(self) -> str:
        lines = [
            f"prepare_pairs: {self.songs_found} audio files found, {self.songs_read} read, "
            f"{len(self.skipped)} skipped",
        ]
        for reason, paths in sorted(self.skipped_by_reason().items()):
            lines.append(f"  skipped ({SKIP_REASONS[reason]}): {len(paths)}")
            lines.extend(
                f"    {item.path}: {item.detail}" for item in self.skipped if item.reason == reason
            )
        for split in SPLITS:
            lines.append(
                f"  {split}: {self.pairs_per_split[split]} pairs from "
                f"{self.songs_per_split[split]} songs"
            )
        if any(self.cross_song_pairs.values()):
            lines.append(
                "  of which cross-song pairs: "
                + ", ".join(f"{split} {self.cross_song_pairs[split]}" for split in SPLITS)
            )
        lines.append(f"  silent pairs skipped (rms below min_rms): {self.silent_pairs_skipped}")
        lines.append(
            f"  audio read: {self.seconds_read / 3600:.3f} h; in pairs: "
            f"{self.seconds_in_pairs / 3600:.3f} h"
        )
        lines.append(
            f"  elapsed {self.elapsed:.1f} s, {self.speed:.0f}x real time -> {self.out_dir}"
        )
        return "\n".join(lines)
