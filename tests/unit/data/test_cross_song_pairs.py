"""prepare_pairs --pairing cross_song|both: pairs across the songs of a split, read back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from songweave.data import prepare_cli
from songweave.data import prepare_pairs as pp
from songweave.data.pair_manifest import list_pairs, read_manifest

RATE = 8000
SEGMENT = 0.25
SONGS = {f"song_{k}.wav": 1.0 + 0.25 * k for k in range(5)}  # 4, 5, 6, 7, 8 segments


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("songs")
    rng = np.random.default_rng(0)
    for name, seconds in SONGS.items():
        t = np.arange(int(seconds * RATE)) / RATE
        audio = 0.2 * np.sin(2 * np.pi * rng.uniform(100, 1500) * t) + 0.02 * rng.normal(
            size=t.size
        )
        sf.write(root / name, audio.astype(np.float32), RATE, subtype="FLOAT")
    return root


def prepare(songs: Path, out: Path, pairing: str, **kwargs) -> pp.PrepareSummary:
    config = pp.PrepareConfig(
        segment_seconds=SEGMENT,
        sample_rate=RATE,
        progress=False,
        val_fraction=0.2,
        pairing=pairing,
        **kwargs,
    )
    return pp.prepare_pairs(songs, out, config)


def records(data: Path) -> list[dict]:
    return [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines()]


def song_segment(songs: Path, name: str, start: float) -> np.ndarray:
    audio, _ = sf.read(songs / name, dtype="float32")
    first = round(start * RATE)
    return audio[first : first + int(SEGMENT * RATE)]


def test_cross_song_pairs_cross_songs_within_a_split(songs: Path, tmp_path: Path) -> None:
    summary = prepare(songs, tmp_path / "DATA", "cross_song")
    rows = records(tmp_path / "DATA")
    split_of = {}
    for row in rows:
        split_of.setdefault(row["input_source"], row["split"])
        assert row["pairing"] == "cross_song" and row["input_source"] != row["target_source"]
        assert split_of.setdefault(row["target_source"], row["split"]) == row["split"]
        assert "source" not in row
    assert summary.songs_per_split == {"train": 3, "val": 2}  # val needs 2 songs to cross
    assert summary.cross_song_pairs == summary.pairs_per_split
    # The files hold the segments the record names: song and start, input and target.
    for row in rows:
        for key, song, start in (
            ("input_file", "input_source", "input_start"),
            ("output_file", "target_source", "target_start"),
        ):
            written, _ = sf.read(tmp_path / "DATA" / row[key], dtype="float32")
            np.testing.assert_array_equal(written, song_segment(songs, row[song], row[start]))
    # More than one target song per input song: the draws are not a fixed rotation.
    train_inputs = [row for row in rows if row["split"] == "train"]
    assert len({(r["input_source"], r["target_source"]) for r in train_inputs}) > 3
    # The dataset reads exactly these pairs, in manifest order.
    pairs = list_pairs(tmp_path / "DATA" / "train")
    assert [p.input_path.name for p in pairs] == [Path(r["input_file"]).name for r in train_inputs]
    info = json.loads((tmp_path / "DATA" / "dataset_info.json").read_text())
    assert info["pairing"] == "cross_song" and info["pairs"] == summary.pairs_per_split


def test_both_adds_cross_song_pairs_after_the_continuations(songs: Path, tmp_path: Path) -> None:
    continuation = prepare(songs, tmp_path / "C", "continuation")
    both = prepare(songs, tmp_path / "B", "both")
    rows = records(tmp_path / "B")
    for split in pp.SPLITS:
        kinds = [r["pairing"] for r in rows if r["split"] == split]
        count = kinds.count("continuation")
        assert kinds == ["continuation"] * count + ["cross_song"] * count  # one per input segment
        assert [r["index"] for r in rows if r["split"] == split] == list(range(2 * count))
    assert sum(both.cross_song_pairs.values()) == sum(both.pairs_per_split.values()) // 2
    # continuation mode is unchanged by the option's existence: no cross-song pairs at all.
    assert all(
        r["pairing"] == "continuation" and r["source"] == r["input_source"]
        for r in records(tmp_path / "C")
    )
    assert continuation.cross_song_pairs == {"train": 0, "val": 0}
    assert "cross-song pairs: train" in both.format()
    again = prepare(songs, tmp_path / "B2", "both", workers=1)
    manifests = [(tmp_path / name / "manifest.jsonl").read_bytes() for name in ("B", "B2")]
    assert manifests[0] == manifests[1]
    assert again.pairs_per_split == both.pairs_per_split
    assert len(read_manifest(tmp_path / "B", "val")) == both.pairs_per_split["val"]


def test_cross_song_needs_two_songs_per_split(songs: Path, tmp_path: Path) -> None:
    few = tmp_path / "few"
    few.mkdir()
    for name in list(SONGS)[:3]:  # 3 songs: val gets 1
        (few / name).write_bytes((songs / name).read_bytes())
    code = prepare_cli.main(
        [
            "--layout",
            "pairs",
            "--songs",
            str(few),
            "--out",
            str(tmp_path / "DATA"),
            "--pairing",
            "cross_song",
            "--val_fraction",
            "0.2",
            "--sample_rate",
            str(RATE),
            "--segment_seconds",
            str(SEGMENT),
            "--progress",
            "false",
        ]
    )
    assert code == 2 and not (tmp_path / "DATA").exists()
    summary = prepare(few, tmp_path / "DATA", "both")  # both: the lone val song keeps its pairs
    assert summary.cross_song_pairs["val"] == 0 and summary.pairs_per_split["val"] > 0
    assert summary.cross_song_pairs["train"] > 0
