"""The two songs exactly as the model combines them: the target aligned to the input (tempo,
key, beats) or looped as it is, the input's beats where windows may start, and the names of the
two files written beside an arrangement."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from songweave.audio.alignment import AlignmentPlan, align_songs, loop_to

log = logging.getLogger(__name__)

# The two sources written beside an arrangement, as OUT_<role>.EXT.
ROLES = ("input", "target")


def stem_paths(output: Path) -> tuple[Path, Path]:
    """OUT_input and OUT_target beside OUT, in its format: the two songs as they were combined."""
    return tuple(output.with_name(f"{output.stem}_{role}{output.suffix}") for role in ROLES)


@dataclass
class CombinedSources:
    """The input and the target exactly as the model combines them (codec rate, input's length)."""

    input: np.ndarray
    target: np.ndarray
    plan: AlignmentPlan | None  # how the target was aligned; None when it was not
    beats: tuple[float, ...] = ()  # the input's beats (s)

    def beat_samples(self, sample_rate: int) -> list[int]:
        return [int(round(beat * sample_rate)) for beat in self.beats]


def combined_sources(
    source: np.ndarray, target: np.ndarray, sample_rate: int, align: bool
) -> CombinedSources:
    """The target aligned to the input (audio/alignment.py) when `align`, else looped as it is.
    Songs too short or without a beat to analyse are combined unaligned, said in a warning."""
    length = len(source)
    if align:
        try:
            pair = align_songs(source, target, sample_rate)
        except ValueError as error:
            log.warning("not aligned: %s", error)
        else:
            log.info("aligned: %s", pair.plan.describe())
            return CombinedSources(pair.input, pair.target, pair.plan, pair.beats)
    return CombinedSources(source, loop_to(target, length), None)


def snap_to_beats(starts: list[int], beats: Sequence[int], max_shift: int) -> list[int]:
    """Move each inner window start to the nearest beat within `max_shift` samples, keeping the
    first and last starts (the song's ends) and the order. With `max_shift` at most a quarter
    of the crossfade, neighbouring windows still overlap by half of it."""
    if len(starts) < 3 or max_shift < 1 or not len(beats):
        return list(starts)
    grid = np.asarray(sorted(beats), dtype=np.int64)
    snapped = [starts[0]]
    for start in starts[1:-1]:
        nearest = int(grid[np.abs(grid - start).argmin()])
        candidate = nearest if abs(nearest - start) <= max_shift else start
        snapped.append(candidate if snapped[-1] < candidate < starts[-1] else start)
    snapped.append(starts[-1])
    return snapped
