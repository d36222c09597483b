"""Bring the target song to the input's tempo, a compatible key and the input's beat grid.

    aligned = align_songs(input_audio, target_audio, 24000)
    aligned.target              # the target as it will be combined: stretched, shifted, on beat
    aligned.plan.describe()     # "target 140.0 -> 110.0 BPM (x0.786), Eb minor -> C minor ..."

The plan (`plan_alignment`) is decided from the two songs' analyses (audio/analysis.py):

- tempo: the stretch that brings the target's tempo to the input's, taking the input's half or
  double tempo when that is a smaller change (a beat tracker often reports either); a change
  beyond MAX_STRETCH either way is not made (the songs stay at their own tempi, said in the plan);
- key: the smallest pitch shift (at most 6 semitones) that puts the target in the input's key,
  its relative key (C major and A minor) or a fifth away (C and G, C and F), in the target's own
  mode, so the two harmonies share most of their notes;
- beats: the stretched target is advanced by up to one beat so its beats fall on the input's:
  the plan's first guess compares the phases of the two beat grids (the circular mean of each
  song's beats), and `align_songs` then takes the lag that best correlates the two songs'
  onset envelopes (spectral flux), which measures onsets where they are.

The stretch and shift are one pass of Rubber Band (pedalboard's `time_stretch`), a
phase-vocoder stretcher with transient handling; it changes tempo without changing pitch and
pitch without changing tempo.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

import numpy as np

from songweave.audio.analysis import PITCH_CLASSES, SongAnalysis, analyze_song

log = logging.getLogger(__name__)

# Beyond a third faster or slower, stretching audibly smears the song.
MAX_STRETCH = 1.33
# Keys a target may be moved to, as (semitones above the input's tonic, mode relation): the same
# key, a fifth up or down in the same mode, and the relative key of the other mode.
SAME_MODE_INTERVALS = (0, 7, 5)
RELATIVE_MINOR = 9  # A minor is 9 semitones above C major
RELATIVE_MAJOR = 3
# Onset envelopes for the beat alignment: 5 ms frames over the first 30 s.
ONSET_HOP_SECONDS = 0.005
ONSET_SECONDS = 30.0


@dataclass(frozen=True)
class AlignmentPlan:
    """How the target is changed to fit the input."""

    input: SongAnalysis
    target: SongAnalysis
    stretch: float  # target speed factor: > 1 plays it faster (1.0: unchanged)
    semitones: int  # pitch shift of the target
    advance_seconds: float  # cut from the stretched target's start to put its beats on the input's
    tempo_changed: bool
    reason: str  # why the tempo was left alone, or ""

    @property
    def target_key(self) -> str:
        return PITCH_CLASSES[(self.target.pitch_class + self.semitones) % 12]

    def describe(self) -> str:
        tempo = (
            f"target {self.target.tempo_bpm:.1f} -> {self.target.tempo_bpm * self.stretch:.1f} BPM "
            f"(x{self.stretch:.3f})"
            if self.tempo_changed
            else f"target kept at {self.target.tempo_bpm:.1f} BPM ({self.reason})"
        )
        return (
            f"input {self.input.describe()}; {tempo}; {self.target.key} {self.target.mode} -> "
            f"{self.target_key} {self.target.mode} ({self.semitones:+d} semitones); beats "
            f"aligned by cutting {self.advance_seconds:.3f} s"
        )

    def to_dict(self) -> dict:
        return {
            "input": self.input.to_dict(),
            "target": self.target.to_dict(),
            "stretch": round(self.stretch, 6),
            "semitones": self.semitones,
            "advance_seconds": round(self.advance_seconds, 6),
            "tempo_changed": self.tempo_changed,
            "target_key_after": f"{self.target_key} {self.target.mode}",
        }


@dataclass(frozen=True)
class AlignedPair:
    input: np.ndarray
    target: np.ndarray  # as long as the input (looped when the aligned target is shorter)
    plan: AlignmentPlan
    beats: tuple[float, ...]  # the input's beats (s): where arrangement windows may start


def tempo_stretch(input_bpm: float, target_bpm: float) -> tuple[float, bool, str]:
    """(speed factor for the target, whether it is applied, why not)."""
    candidates = [input_bpm * factor / target_bpm for factor in (1.0, 0.5, 2.0)]
    stretch = min(candidates, key=lambda value: abs(math.log(value)))
    if abs(math.log(stretch)) > math.log(MAX_STRETCH):
        return 1.0, False, f"x{stretch:.2f} would be beyond x{MAX_STRETCH:g} either way"
    return stretch, True, ""


def key_shift(input_analysis: SongAnalysis, target_analysis: SongAnalysis) -> int:
    """Smallest shift (semitones in [-6, 6]) to a key compatible with the input's."""
    return key_shift_between(
        input_analysis.pitch_class,
        input_analysis.mode,
        target_analysis.pitch_class,
        target_analysis.mode,
    )


def key_shift_between(
    input_tonic: int, input_mode: str, target_tonic: int, target_mode: str
) -> int:
    """key_shift from pitch classes (0 = C) and modes ("major" or "minor"); 0 when compatible."""
    if target_mode == input_mode:
        goals = [(input_tonic + interval) % 12 for interval in SAME_MODE_INTERVALS]
    elif target_mode == "minor":
        goals = [(input_tonic + RELATIVE_MINOR) % 12]
    else:
        goals = [(input_tonic + RELATIVE_MAJOR) % 12]
    shifts = [((goal - target_tonic + 6) % 12) - 6 for goal in goals]
    # Equal sizes: the same key before the fifths, upward before downward.
    return min(shifts, key=lambda shift: (abs(shift), shifts.index(shift), -shift))


def plan_alignment(input_analysis: SongAnalysis, target_analysis: SongAnalysis) -> AlignmentPlan:
    stretch, changed, reason = tempo_stretch(input_analysis.tempo_bpm, target_analysis.tempo_bpm)
    semitones = key_shift(input_analysis, target_analysis)
    plan = AlignmentPlan(input_analysis, target_analysis, stretch, semitones, 0.0, changed, reason)
    if not changed:
        return plan
    # After the stretch the target's beat period is the input's (or its half or double); cut
    # its start so that every target beat falls on an input beat or halfway between two.
    period = 60.0 / (target_analysis.tempo_bpm * stretch)
    stretched_phase = target_analysis.beat_phase() / stretch
    advance = (stretched_phase - input_analysis.beat_phase()) % period
    return replace(plan, advance_seconds=float(advance))


def onset_envelope(audio: np.ndarray, sample_rate: int, hop: int) -> np.ndarray:
    """Spectral flux every `hop` samples: how much new energy each frame brings (log
    magnitudes, half-wave rectified), the signal beat trackers follow."""
    import torch

    signal = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    n_fft = 4 * hop
    if signal.numel() < n_fft:
        return np.zeros(1, dtype=np.float32)
    spectrum = torch.stft(
        signal, n_fft, hop, window=torch.hann_window(n_fft), center=False, return_complex=True
    )
    log_magnitude = torch.log1p(100 * spectrum.abs())
    flux = torch.relu(log_magnitude[:, 1:] - log_magnitude[:, :-1]).sum(dim=0)
    flux = flux - flux.mean()
    return torch.cat([flux.new_zeros(1), flux]).numpy()


def onset_advance(
    source: np.ndarray, stretched: np.ndarray, sample_rate: int, period: float
) -> float:
    """The cut (s, within one beat period) from the stretched target's start that best lines its
    onsets up with the input's: the lag maximizing the correlation of their onset envelopes over
    the first ONSET_SECONDS. Onsets are measured where they are, so the tracker's few tens of
    milliseconds of beat-time error do not add up between the two songs."""
    hop = max(1, int(sample_rate * ONSET_HOP_SECONDS))
    span = int(ONSET_SECONDS * sample_rate)
    reference = onset_envelope(source[:span], sample_rate, hop)
    moving = onset_envelope(stretched[: span + int(period * sample_rate)], sample_rate, hop)
    lags = max(1, int(round(period * sample_rate / hop)))
    length = min(len(reference), len(moving) - lags)
    if length < 2 * lags:
        return 0.0
    scores = [float(np.dot(reference[:length], moving[lag : lag + length])) for lag in range(lags)]
    return int(np.argmax(scores)) * hop / sample_rate


def stretch_and_shift(target: np.ndarray, sample_rate: int, plan: AlignmentPlan) -> np.ndarray:
    """The target at the plan's tempo and key (mono float32), not yet advanced."""
    audio = np.ascontiguousarray(target, dtype=np.float32)
    if plan.stretch != 1.0 or plan.semitones != 0:
        try:
            from pedalboard import time_stretch
        except ImportError:
            raise ValueError(
                "pedalboard is not installed: pip install -r requirements.txt"
            ) from None
        audio = time_stretch(
            audio[None],
            float(sample_rate),
            stretch_factor=float(plan.stretch),
            pitch_shift_in_semitones=float(plan.semitones),
        )[0]
    return np.ascontiguousarray(audio, dtype=np.float32)


def apply_alignment(target: np.ndarray, sample_rate: int, plan: AlignmentPlan) -> np.ndarray:
    """The target stretched, shifted and advanced as `plan` says (mono float32)."""
    audio = stretch_and_shift(target, sample_rate, plan)
    return audio[int(round(plan.advance_seconds * sample_rate)) :]


def loop_to(audio: np.ndarray, length: int) -> np.ndarray:
    if len(audio) >= length:
        return audio[:length]
    return np.tile(audio, -(-length // len(audio)))[:length]


def align_songs(input_audio: np.ndarray, target_audio: np.ndarray, sample_rate: int) -> AlignedPair:
    """Analyse both songs and return the target aligned to the input, at the input's length."""
    input_analysis = analyze_song(input_audio, sample_rate)
    target_analysis = analyze_song(target_audio, sample_rate)
    plan = plan_alignment(input_analysis, target_analysis)
    stretched = stretch_and_shift(target_audio, sample_rate, plan)
    if plan.tempo_changed:
        period = 60.0 / (plan.target.tempo_bpm * plan.stretch)
        plan = replace(
            plan, advance_seconds=onset_advance(input_audio, stretched, sample_rate, period)
        )
    start = int(round(plan.advance_seconds * sample_rate))
    target = loop_to(stretched[start:], len(input_audio))
    return AlignedPair(
        np.ascontiguousarray(input_audio, dtype=np.float32), target, plan, input_analysis.beats
    )
