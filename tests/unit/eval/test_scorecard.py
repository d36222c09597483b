"""The arrangement scorecard on songs with known answers, and the references it is read against:
a copy of one song fails, the aligned sum of both passes, an unaligned sum misses the tempo."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import SAMPLE_RATE as RATE
from helpers import beat_song as song

from songweave.audio.alignment import align_songs
from songweave.audio.codecs import get_codec
from songweave.eval.reference_arrangements import REFERENCE_NAMES, reference_arrangements
from songweave.eval.scorecard import nonnegative_fit, score_arrangement, tempo_error


def test_the_nonnegative_fit_finds_the_mix_and_never_goes_negative():
    torch.manual_seed(0)
    first, second = torch.rand(64, 100), torch.rand(64, 100)
    assert nonnegative_fit(0.3 * first + 0.7 * second, first, second) == pytest.approx(
        (0.3, 0.7), abs=1e-6
    )
    a, b = nonnegative_fit(first - 0.5 * second, first, second)
    assert b == 0.0 and a > 0


def test_half_and_double_tempo_count_as_the_same():
    assert tempo_error(240.0, 120.0) == 0.0 and tempo_error(60.0, 120.0) == 0.0
    assert tempo_error(126.0, 120.0) == pytest.approx(0.05)


@pytest.fixture(scope="module")
def cards():
    source, raw = song(120, 0, seconds=16.0, offset=0.05), song(100, 2, seconds=20.0, offset=0.3)
    pair = align_songs(source, raw, RATE)
    references = reference_arrangements(pair.input, pair.target, raw, get_codec("mdct"))
    assert set(references) == set(REFERENCE_NAMES)
    return {
        name: score_arrangement(audio, pair.input, pair.target, RATE)
        for name, audio in references.items()
    }


def test_a_copy_of_one_song_fails_on_the_other_songs_share(cards):
    assert {"target_share", "target_fidelity"} <= set(cards["input_copy"].failed)
    assert {"input_share", "input_fidelity"} <= set(cards["target_copy"].failed)
    assert cards["input_copy"].input_share == pytest.approx(1.0)
    assert cards["input_copy"].explained == pytest.approx(1.0, abs=1e-6)


def test_the_aligned_sum_holds_both_in_time_and_key_the_unaligned_does_not(cards):
    aligned, unaligned = cards["sum_aligned"], cards["sum_unaligned"]
    # Their chords change on different beats (no downbeat alignment), which the dissonance
    # check may catch; everything else holds.
    assert set(aligned.failed) <= {"dissonance"}, aligned.failed
    assert 0.3 < aligned.input_share < 0.7 and aligned.explained > 0.9
    assert aligned.tempo_error < 0.02 and aligned.key_compatible
    assert unaligned.explained < aligned.explained
    assert "tempo" in unaligned.failed or unaligned.beat_confidence < aligned.beat_confidence


def test_a_short_output_is_refused():
    short = np.zeros(4 * RATE, dtype=np.float32)
    with pytest.raises(ValueError, match="needs at least 8 s"):
        score_arrangement(short, short, short, RATE)


def test_the_score_tool_reads_an_arrangement_and_its_stems(tmp_path, capsys):
    import json

    import soundfile as sf

    from songweave.eval import score

    source, target = song(120, 0, seconds=10.0), song(120, 0, seconds=10.0, offset=0.25)
    sf.write(tmp_path / "out_input.wav", source, RATE)
    sf.write(tmp_path / "out_target.wav", target, RATE)
    sf.write(tmp_path / "out.wav", 0.5 * (source + target), RATE)
    report = tmp_path / "score.json"
    argv = ["--arrangement", str(tmp_path / "out.wav"), "--json", str(report)]
    assert score.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[1].startswith("arrangement") and "input_copy" in printed
    cards = json.loads(report.read_text())["scorecards"]
    assert cards["arrangement"]["input_share"] == pytest.approx(0.5, abs=0.1)
    assert "sum_unaligned" not in cards  # no --raw_target
    assert score.main(["--arrangement", str(tmp_path / "missing.wav")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def _card(**changes):
    from songweave.eval.scorecard import Scorecard

    values = dict(
        input_share=0.5,
        target_share=0.5,
        explained=0.9,
        input_fidelity=0.95,
        target_fidelity=0.95,
        tempo_bpm=120.0,
        input_tempo_bpm=120.0,
        tempo_error=0.0,
        beat_confidence=0.60,
        source_beat_confidence=(0.62, 0.30),
        dissonance=0.40,
        louder_source_dissonance=0.40,
        key="C major",
        key_strength=0.8,
        key_compatible=True,
        windows=3,
    )
    values.update(changes)
    return Scorecard(**values)


@pytest.mark.parametrize(
    "changes, failed",
    [
        ({}, []),
        ({"input_share": 0.29, "target_share": 0.71}, ["input_share"]),
        ({"explained": 0.79}, ["explained"]),
        ({"target_fidelity": 0.89}, ["target_fidelity"]),
        ({"tempo_error": 0.021}, ["tempo"]),
        # Beats are judged against the input's (0.62), not the weaker source's (0.30).
        ({"beat_confidence": 0.56}, ["beats"]),
        ({"beat_confidence": 0.58}, []),
        ({"dissonance": 0.43}, ["dissonance"]),
        ({"key_compatible": False}, ["key"]),
    ],
)
def test_the_pass_criterion_is_the_arrangement_goal(changes, failed):
    from songweave.eval.scorecard import Thresholds, failed_checks

    assert failed_checks(_card(**changes), Thresholds()) == failed


def test_rejudge_changes_the_verdicts_and_never_the_figures(tmp_path):
    import json

    from songweave.eval.rejudge import rejudge_comparison
    from songweave.eval.scorecard import Thresholds

    loose = Thresholds(min_share=0.2, max_tempo_error=0.04)
    cards = {"a + b": {"agent": _card(input_share=0.25, target_share=0.75), "rule": _card()}}
    for by_name in cards.values():
        for card in by_name.values():
            card.failed = []  # as judged by the looser thresholds of an older table
    table = {
        "pairs": ["a + b"],
        "excerpt_seconds": 24.0,
        "thresholds": {"min_share": loose.min_share},
        "rows": {},
        "cards": {p: {n: c.to_dict() for n, c in row.items()} for p, row in cards.items()},
    }
    result = {"num_pairs": 3, "band_balance": 0.5}
    comparison = {"agent": result, "arrangement": table, "verdicts": {}, "settings": {}}
    (tmp_path / "comparison.json").write_text(json.dumps(comparison))
    rejudged = rejudge_comparison(tmp_path)["arrangement"]
    assert rejudged["rows"]["agent"]["pass_rate"] == 0.0
    assert rejudged["rows"]["rule"]["pass_rate"] == 1.0
    assert rejudged["cards"]["a + b"]["agent"]["failed"] == ["input_share"]
    assert rejudged["rows"]["agent"]["input_share"] == pytest.approx(0.25)
    markdown = (tmp_path / "comparison.md").read_text()
    assert "each song's share 0.3-0.7" in markdown and "| agent | 0.000 |" in markdown
    assert json.loads((tmp_path / "comparison.json").read_text())["arrangement"] == rejudged
