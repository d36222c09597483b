"""Cross-song pairs are aligned: the target segment is brought to the input song's tempo and a
compatible key, and the manifest says how; `--align false` keeps the segments as they are."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from helpers import SAMPLE_RATE, beat_song

from songweave.audio.alignment import onset_advance
from songweave.audio.analysis import analyze_song
from songweave.data.prepare_pairs import PrepareConfig, prepare_pairs

SONGS = {"a.wav": (120, 0), "b.wav": (100, 2), "c.wav": (110, 7), "d.wav": (125, 5)}


@pytest.fixture(scope="module")
def songs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("songs")
    for name, (bpm, tonic) in SONGS.items():
        sf.write(folder / name, beat_song(bpm, tonic, seconds=16.0), SAMPLE_RATE)
    return folder


def _records(data):
    lines = (data / "manifest.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize("align", [True, False])
def test_cross_song_targets_take_the_inputs_tempo(songs, tmp_path, align):
    data = tmp_path / "data"
    config = PrepareConfig(
        segment_seconds=4.0, pairing="cross_song", align=align, progress=False, val_fraction=0.5
    )
    prepare_pairs(songs, data, config)
    records = _records(data)
    assert records and all(r["pairing"] == "cross_song" for r in records)
    assert json.loads((data / "dataset_info.json").read_text())["aligned_cross_song"] is align
    record = records[0]
    if not align:
        assert "target_stretch" not in record
        return
    assert all("target_stretch" in r and -6 <= r["target_semitones"] <= 6 for r in records)
    input_bpm = SONGS[record["input_source"]][0]
    target_bpm = SONGS[record["target_source"]][0]
    assert record["target_stretch"] == pytest.approx(input_bpm / target_bpm, rel=0.03)
    target, _ = sf.read(data / record["output_file"], dtype="float32")
    assert len(target) == 4 * SAMPLE_RATE and np.abs(target).max() > 0.05
    assert analyze_song(target, SAMPLE_RATE).tempo_bpm == pytest.approx(input_bpm, rel=0.03)
    # Its onsets sit on the input segment's: no further lag lines them up better.
    source, _ = sf.read(data / record["input_file"], dtype="float32")
    period = 60.0 / input_bpm
    lag = onset_advance(source, np.concatenate([target, target]), SAMPLE_RATE, period)
    assert min(lag, period - lag) < 0.02, lag
