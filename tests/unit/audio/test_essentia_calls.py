"""essentia runs in a fresh child per call: the same audio gives the same figures whatever was
analysed before, a failure is one ValueError, and a dead server is replaced."""

from __future__ import annotations

import pytest
from helpers import SAMPLE_RATE as RATE
from helpers import beat_song

from songweave.audio import essentia_calls
from songweave.audio.analysis import analyze_song, sensory_dissonance


def test_an_analysis_does_not_depend_on_what_came_before():
    first, other = beat_song(120, 0, seconds=10.0), beat_song(97, 5, seconds=10.0, offset=0.2)
    alone = analyze_song(first, RATE)
    analyze_song(other, RATE)
    again = analyze_song(first, RATE)
    assert again == alone
    assert sensory_dissonance(first, RATE) == sensory_dissonance(first, RATE)


def test_a_failing_call_is_one_value_error_and_a_dead_server_is_replaced():
    with pytest.raises(ValueError, match="essentia dissonance_values"):
        essentia_calls.run_isolated("dissonance_values", beat_song(120, 0, seconds=4.0), 7, 0.0)
    server = essentia_calls._server
    server.process.kill()
    server.process.wait()
    assert analyze_song(beat_song(120, 0, seconds=6.0), RATE).tempo_bpm > 0
    assert essentia_calls._server is not server
