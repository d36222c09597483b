"""The headline table of compare-masks: every model and every reference scored on pairs of
validation songs, never training songs."""

from __future__ import annotations

import re

import pytest
import soundfile as sf
import torch
from helpers import SAMPLE_RATE, beat_song, headless_chromium, loaded_players

from model_simple_transformer import SimpleTransformer
from songweave.data.prepare_pairs import PrepareConfig, prepare_pairs
from songweave.eval.arrangement_table import (
    arrangement_table,
    held_out_song_pairs,
    table_markdown,
    validation_songs,
)
from songweave.eval.reference_arrangements import REFERENCE_NAMES
from songweave.inference.load import load_model
from songweave.runtime.checkpoint import save_checkpoint


def test_models_and_references_on_held_out_song_pairs(tmp_path):
    songs = tmp_path / "songs"
    songs.mkdir()
    for index, (bpm, tonic) in enumerate([(120, 0), (100, 2), (110, 7), (96, 9)]):
        sf.write(songs / f"s{index}.wav", beat_song(bpm, tonic, seconds=16.0), SAMPLE_RATE)
    data = tmp_path / "data"
    config = PrepareConfig(segment_seconds=4.0, val_fraction=0.5, progress=False)
    prepare_pairs(songs, data, config)
    held_out = validation_songs(data, songs)
    assert len(held_out) == 2
    train_songs = {
        line.split('"input_source": "')[1].split('"')[0]
        for line in (data / "manifest.jsonl").read_text().splitlines()
        if '"split": "train"' in line
    }
    assert not train_songs & {path.name for path in held_out}
    pairs = held_out_song_pairs(data, songs)
    assert [(p.input, p.target) for p in pairs] == [(held_out[0], held_out[1])]

    torch.manual_seed(0)
    model = SimpleTransformer(
        encoding_dim=16, nhead=2, num_layers=1, dim_feedforward=32, num_transformer_layers=2
    )
    checkpoint = save_checkpoint(
        tmp_path / "c.pth",
        {
            "model_state_dict": model.state_dict(),
            "model_config": dict(model.config),
            "train_config": {"codec": "mdct", "codec_option": {"dim": 16}, "segment_seconds": 4.0},
        },
    )
    listen = tmp_path / "listen"
    table = arrangement_table(
        {"tiny": load_model(checkpoint, "cpu")}, pairs, False, 12.0, listening_dir=listen
    )
    assert list(table["rows"]) == ["tiny", *REFERENCE_NAMES]
    assert table["rows"]["input_copy"]["pass_rate"] == 0.0
    assert table["rows"]["target_copy"]["target_share"] > 0.99
    assert all(row["pairs"] == 1 for row in table["rows"].values())
    lines = table_markdown(table)
    assert len(lines) == 2 + 1 + len(REFERENCE_NAMES) and lines[2].startswith("| tiny |")

    # The listening page: the sources, then every arrangement with its scorecard.
    page = (listen / "index.html").read_text()
    targets = re.findall(r"src='([^']*)'", page)
    assert targets and all((listen / target).is_file() for target in targets)
    files = table["listening"][table["pairs"][0]]["files"]
    assert files["input_copy"] == files["input_song"] == "pair_0_input_song.wav"
    assert files["target_copy"] == files["target_aligned"]
    assert page.count("<audio") == 3 + 1 + len(REFERENCE_NAMES)
    for name in ["tiny", *REFERENCE_NAMES]:
        assert f"<td>{name}</td>" in page
    card = table["cards"][table["pairs"][0]]["tiny"]
    assert f"{card['explained']:.3f}" in page
    assert sf.info(str(listen / files["tiny"])).frames == 12 * SAMPLE_RATE
    assert "Alignment: input" in page

    driver = headless_chromium(tmp_path / "profile")
    try:
        driver.get((listen / "index.html").as_uri())
        players = loaded_players(driver)
        assert len(players) == 3 + 1 + len(REFERENCE_NAMES)
        for src, state, duration, expected, error in players:
            assert error is None and state >= 1, (src, state, error)
            assert duration == pytest.approx(expected, abs=1e-3), src
        assert driver.title == "Arrangements of held-out song pairs"
    finally:
        driver.quit()
