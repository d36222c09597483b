"""creative-compare-masks: the untrained agent's hold, bad flags, verdicts at comparable band
balance. Whole comparisons (schema, resume): tests/e2e/test_compare_masks_runs.py."""

from __future__ import annotations

import pytest
from helpers import make_compare_masks_data as tiny_data

from songweave.eval import compare_masks


def test_untrained_agent_holds_every_epoch_whatever_the_shared_flags(tmp_path):
    data = tiny_data(tmp_path)
    options = compare_masks.parse_options(
        [
            "--dataset_folder",
            str(data),
            "--out",
            str(tmp_path / "out"),
            "--epochs",
            "3",
            "--",
            "--agent_hold_epochs",
            "1",
        ]
    )
    configs = compare_masks.resolve_training_configs(options)
    assert configs["untrained_agent"].agent_hold_epochs == 3
    assert configs["agent"].agent_hold_epochs == 1
    assert configs["untrained_agent"].use_creative_agent


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--variants", "agent,foo"], "--variants"),
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--epochs", "two"], "invalid int value"),
        (["--", "--checkpoint_dir", "x"], "set by compare_masks itself"),
        (["--", "--mask_type=energy"], "set by compare_masks itself"),
        (["--", "--nhead", "0"], "--nhead must be >= 1"),
        (["--", "--no_such_flag"], "unrecognized arguments"),
    ],
)
def test_bad_flags_are_one_line(tmp_path, capsys, flags, message):
    data, out = tiny_data(tmp_path), tmp_path / "compare"
    code = compare_masks.main(["--dataset_folder", str(data), "--out", str(out), *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not out.exists()


def test_dataset_without_pairs_is_refused(tmp_path, capsys):
    (tmp_path / "songs").mkdir()
    code = compare_masks.main(
        ["--dataset_folder", str(tmp_path / "songs"), "--out", str(tmp_path / "out")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "creative-prepare-pairs" in err[0]


def _result(balance: float, mr_stft: float, variant: str = "x") -> dict:
    return {
        "band_balance": balance,
        "mr_stft": mr_stft,
        "si_sdr_db": 0.0,
        "comparable": variant != "none" and compare_masks.comparable(balance),
    }


def test_verdicts_need_comparable_band_balance():
    results = {
        "agent": _result(0.5, 1.0),
        "temporal": _result(0.6, 2.0),
        "band_energy": _result(0.49, 0.9),
        "none": _result(0.5, 0.1, "none"),
    }
    verdicts = compare_masks.agent_verdicts(results)
    assert verdicts["agent_beats_temporal_mr_stft"]["beats"] is None
    assert "temporal band balance 0.6000" in verdicts["agent_beats_temporal_mr_stft"]["reason"]
    assert verdicts["agent_beats_band_energy_mr_stft"]["beats"] is False
    results["band_energy"] = _result(0.55, 1.1)
    assert compare_masks.agent_verdicts(results)["agent_beats_band_energy_mr_stft"]["beats"]
    results["agent"] = _result(0.44, 0.5)
    assert all(v["beats"] is None for v in compare_masks.agent_verdicts(results).values())
    # `none` has the lowest distance here, yet no verdict compares the agent with it.
    assert not any("none" in key for key in verdicts)


def test_a_song_store_is_taken_with_its_songs_folder(tmp_path):
    import numpy as np
    import soundfile as sf

    from songweave.audio.codecs import get_codec
    from songweave.data.split_dataset import songs_folder, validation_song_names
    from songweave.data.store_build import StoreConfig, build_store

    songs = tmp_path / "songs"
    songs.mkdir()
    rng = np.random.default_rng(0)
    for number in range(4):
        sf.write(songs / f"{number}.wav", 0.1 * rng.standard_normal(24000 * 2), 24000)
    store = tmp_path / "store"
    build_store(songs, store, get_codec("mdct"), StoreConfig(window_seconds=0.25, progress=False))
    options = compare_masks.parse_options(["--dataset_folder", str(store), "--out", "o"])
    assert options.dataset_folder == store.resolve()
    assert songs_folder(store) == songs.resolve()
    val = validation_song_names(store)
    assert val and all((songs / name).is_file() for name in val)
