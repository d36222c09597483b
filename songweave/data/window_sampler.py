"""Training pairs drawn from a song store as (song, start) windows, statelessly.

Sample g of the run (g counts samples over all ranks and epochs: 0, 1, 2, ...) is a pure
function of (seed, g): a counter-based generator (splitmix64 of the seed and the counter) gives
the uniforms that pick its songs and starts. Nothing is carried from one sample to the next, so

- any process can draw any sample: rank r of W at global step s takes samples
  s * B * W + r * B + j (j < B), and each DataLoader worker draws only the indices it is given;
- a run resumes from one integer, the samples consumed, at any world size, batch size or worker
  count: the global sequence is the same, only how it is cut into batches changes.

A draw picks the input song with probability proportional to its duration. A continuation pair
starts at any frame and takes the next window of the same song as target (a beat grid would
leave about one start per beat). A cross-song pair (``cross_fraction`` of the draws) starts on
one of the input's beats and takes a window starting on a beat of another song, chosen by
duration too, whose tempo (or its half or double) is within ``TEMPO_TOLERANCE`` of the input's
and whose key is compatible (the same, relative or a fifth away: the keys alignment would not
shift), so the two beat grids and keys agree without stretching latents.
Where the analysis is missing, any other song is a partner. When ``PARTNER_TRIES`` draws find no
compatible partner, the sample falls back to a continuation pair (``describe_draws`` counts them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from songweave.audio.alignment import key_shift_between
from songweave.data.song_store import MODE_CODES, NO_KEY, SongStore

TEMPO_TOLERANCE = 0.04
PARTNER_TRIES = 32
_MASK64 = (1 << 64) - 1
_MODES = {code: name for name, code in MODE_CODES.items()}

# Streams of uniforms per sample (the partner tries follow the last).
_INPUT_SONG, _INPUT_START, _KIND, _TARGET_START, _PARTNER = range(5)


def _splitmix64(value: int) -> int:
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def counter_uniform(seed: int, sample: int, stream: int) -> float:
    """A uniform in [0, 1) that depends on (seed, sample, stream) only."""
    key = _splitmix64(_splitmix64(int(seed) & _MASK64) ^ (int(sample) & _MASK64))
    return (_splitmix64(key ^ int(stream)) >> 11) / float(1 << 53)


@dataclass(frozen=True)
class Window:
    """One drawn pair: latent frames [start, start + frames) of each song."""

    sample: int
    input_song: int
    input_start: int
    target_song: int
    target_start: int
    cross_song: bool
    fallback: bool  # a cross-song draw that found no compatible partner


def tempo_compatible(tempo_a: float, tempo_b: float, tolerance: float = TEMPO_TOLERANCE) -> bool:
    if tempo_a <= 0 or tempo_b <= 0:
        return True  # not analysed: nothing to say against it
    ratio = abs(math.log(tempo_a / tempo_b))
    return min(ratio, abs(ratio - math.log(2))) <= math.log1p(tolerance)


def key_compatible(tonic_a: int, mode_a: int, tonic_b: int, mode_b: int) -> bool:
    if NO_KEY in (tonic_a, mode_a, tonic_b, mode_b):
        return True
    return key_shift_between(tonic_a, _MODES[mode_a], tonic_b, _MODES[mode_b]) == 0


class WindowSampler:
    """Draws windows of ``frames`` latent frames from the songs of one split."""

    def __init__(
        self, store: SongStore, split: str, frames: int, cross_fraction: float, seed: int
    ) -> None:
        if frames < 1:
            raise ValueError(f"window frames must be >= 1, got {frames}")
        self.frames = int(frames)
        self.seed = int(seed)
        songs = store.split_songs(split)
        rows = store.index[songs]
        audible = rows["loud_end"].astype(np.int64) - rows["loud_start"].astype(np.int64)
        self.songs = songs[audible >= 2 * self.frames]
        if len(self.songs) == 0:
            raise ValueError(
                f"{store.folder}: no {split} song holds two windows of {self.frames} frames"
            )
        rows = store.index[self.songs]
        # Compact per-song arrays: the loader holds about 45 bytes per song beside the index.
        self.songs = self.songs.astype(np.int32)
        # Windows are drawn in each song's audible span: frames [first_frame, first_frame +
        # song_frames).
        self.first_frame = rows["loud_start"].astype(np.int32)
        self.song_frames = rows["loud_end"].astype(np.int64) - rows["loud_start"]
        self.tempo = rows["tempo_bpm"].astype(np.float32)
        self.pitch_class = rows["pitch_class"].astype(np.int8)
        self.mode = rows["mode"].astype(np.int8)
        self.beat_offset = rows["beat_offset"].astype(np.int64)
        self.beat_count = rows["beat_count"].astype(np.int32)
        self.beats = store.beats
        self.cumulative = np.cumsum(self.song_frames, dtype=np.float64)
        self.cumulative /= self.cumulative[-1]
        self.cross_fraction = float(cross_fraction) if len(self.songs) > 1 else 0.0

    def fixed_cuts(self) -> int:
        """Pairs the fixed-cut layout gets from these songs: floor(frames / window) - 1 each."""
        return int(np.sum(self.song_frames // self.frames - 1))

    def _song(self, uniform: float) -> int:
        return min(
            int(np.searchsorted(self.cumulative, uniform, side="right")), len(self.songs) - 1
        )

    def _start(self, position: int, uniform: float, span: int, on_beat: bool) -> int:
        """A start in the song's audible span with room for `span` frames: on a beat when asked
        and the song has beats there, else any frame."""
        begin = int(self.first_frame[position])
        last = begin + int(self.song_frames[position]) - span
        count = int(self.beat_count[position]) if on_beat else 0
        if count:
            first = int(self.beat_offset[position])
            beats = self.beats[first : first + count]
            low = int(np.searchsorted(beats, begin, side="left"))
            eligible = int(np.searchsorted(beats, last, side="right")) - low
            if eligible > 0:
                return int(beats[low + min(int(uniform * eligible), eligible - 1)])
        return begin + min(int(uniform * (last - begin + 1)), last - begin)

    def _compatible(self, a: int, b: int) -> bool:
        return (
            a != b
            and tempo_compatible(float(self.tempo[a]), float(self.tempo[b]))
            and key_compatible(
                int(self.pitch_class[a]),
                int(self.mode[a]),
                int(self.pitch_class[b]),
                int(self.mode[b]),
            )
        )

    def draw(self, sample: int) -> Window:
        def uniform(stream: int) -> float:
            return counter_uniform(self.seed, sample, stream)

        a = self._song(uniform(_INPUT_SONG))
        cross = uniform(_KIND) < self.cross_fraction
        partner = None
        if cross:
            for attempt in range(PARTNER_TRIES):
                candidate = self._song(uniform(_PARTNER + attempt))
                if self._compatible(a, candidate):
                    partner = candidate
                    break
        if partner is None:
            start = self._start(a, uniform(_INPUT_START), 2 * self.frames, on_beat=False)
            return Window(
                sample,
                int(self.songs[a]),
                start,
                int(self.songs[a]),
                start + self.frames,
                cross_song=False,
                fallback=cross,
            )
        return Window(
            sample,
            int(self.songs[a]),
            self._start(a, uniform(_INPUT_START), self.frames, on_beat=True),
            int(self.songs[partner]),
            self._start(partner, uniform(_TARGET_START), self.frames, on_beat=True),
            cross_song=True,
            fallback=False,
        )


@dataclass(frozen=True)
class DrawSummary:
    samples: int
    cross_song: int
    fallbacks: int
    distinct_windows: int

    def describe(self) -> str:
        return (
            f"{self.samples} draws: {self.cross_song} cross-song, {self.fallbacks} continuation "
            f"for want of a compatible partner, {self.distinct_windows} distinct input windows"
        )


def describe_draws(sampler: WindowSampler, first: int, count: int) -> DrawSummary:
    windows = [sampler.draw(g) for g in range(first, first + count)]
    return DrawSummary(
        samples=count,
        cross_song=sum(w.cross_song for w in windows),
        fallbacks=sum(w.fallback for w in windows),
        distinct_windows=len({(w.input_song, w.input_start) for w in windows}),
    )
