"""Tempo, beats and key of synthetic songs with known answers, and the alignment that brings one
song to another's tempo, a compatible key and its beat grid."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import beat_song as song

from songweave.audio.alignment import align_songs, key_shift, plan_alignment, tempo_stretch
from songweave.audio.analysis import SongAnalysis, analyze_song

RATE = 24_000  # beat_song's rate


def _analysis(bpm: float, key: str, mode: str, beats=(0.0,)) -> SongAnalysis:
    return SongAnalysis(bpm, tuple(beats), 0.8, key, mode, 0.9, 10.0)


def test_tempo_beats_and_key_of_a_known_song():
    analysis = analyze_song(song(120, 2, offset=0.1), RATE)
    assert analysis.tempo_bpm == pytest.approx(120, rel=0.02)
    assert (analysis.key, analysis.mode) == ("D", "major")
    assert analysis.beat_phase() == pytest.approx(0.1, abs=0.03)
    assert analysis.beat_confidence > 0.3


@pytest.mark.parametrize(
    "input_bpm, target_bpm, stretch, changed",
    [(120, 100, 1.2, True), (120, 240, 1.0, True), (90, 100, 0.9, True), (70, 100, 1.0, False)],
)
def test_the_smallest_tempo_change_counting_half_and_double(
    input_bpm, target_bpm, stretch, changed
):
    factor, applied, _ = tempo_stretch(input_bpm, target_bpm)
    assert applied is changed
    assert factor == pytest.approx(stretch if changed else 1.0)


@pytest.mark.parametrize(
    "input_key, target_key, semitones",
    [
        (("C", "major"), ("D", "major"), -2),  # to C itself
        (("C", "major"), ("Ab", "major"), -1),  # to G, a fifth up: one semitone
        (("C", "major"), ("E", "minor"), 5),  # to A minor, the relative key
        (("A", "minor"), ("C", "major"), 0),  # already the relative major
        (("C", "major"), ("F#", "major"), 1),  # a tritone from C: G (first) and F tie
    ],
)
def test_the_smallest_shift_to_a_compatible_key(input_key, target_key, semitones):
    shift = key_shift(_analysis(120, *input_key), _analysis(120, *target_key))
    assert shift == semitones
    assert -6 <= shift <= 6


def test_an_aligned_target_has_the_inputs_tempo_key_and_beats():
    source = song(120, 0, offset=0.05)
    target = song(100, 2, offset=0.3)
    aligned = align_songs(source, target, RATE)
    plan = aligned.plan
    assert plan.stretch == pytest.approx(1.2, rel=0.03) and plan.semitones == -2
    assert len(aligned.target) == len(source)
    after = analyze_song(aligned.target, RATE)
    assert after.tempo_bpm == pytest.approx(120, rel=0.02)
    assert (after.key, after.mode) == ("C", "major")
    # The target's clicks, at 0.3 s + k 0.6 s, land at 0.25 s + k 0.5 s after the stretch and
    # then `advance` earlier; the input's are at 0.05 s + k 0.5 s.
    period = 60.0 / (plan.target.tempo_bpm * plan.stretch)
    gap = (0.3 / plan.stretch - plan.advance_seconds - 0.05) % period
    assert min(gap, period - gap) < 0.01, (gap, plan.advance_seconds)
    assert "D major -> C major (-2 semitones)" in plan.describe()


def test_too_short_audio_is_a_one_line_error():
    with pytest.raises(ValueError, match="at least 3 s"):
        analyze_song(np.zeros(RATE, dtype=np.float32), RATE)


def test_the_plan_describes_a_tempo_it_left_alone():
    plan = plan_alignment(_analysis(70, "C", "major"), _analysis(100, "C", "major"))
    assert not plan.tempo_changed and "kept at 100.0 BPM" in plan.describe()
