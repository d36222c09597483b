"""demo_music: deterministic, varied, unclipped songs; ensure_demo_dataset builds once."""

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from songweave.data import demo_music as dm

RATE = 8000


def _song(seed: int, index: int = 0, seconds: float = 3.0, rate: int = RATE) -> np.ndarray:
    return dm.synthesize_song(np.random.default_rng([seed, index]), seconds, rate)


def _centroid(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x))
    return float((spec * np.fft.rfftfreq(len(x), 1 / rate)).sum() / spec.sum())


def test_deterministic_and_seed_dependent(tmp_path):
    np.testing.assert_array_equal(_song(0), _song(0))
    assert not np.allclose(_song(0), _song(1))
    a = dm.make_demo_songs(tmp_path / "a", num_songs=2, seed=3, seconds=2.0, sample_rate=RATE)
    b = dm.make_demo_songs(tmp_path / "b", num_songs=3, seed=3, seconds=2.0, sample_rate=RATE)
    assert [p.name for p in a] == ["demo_song_000.wav", "demo_song_001.wav"]
    for pa, pb in zip(a, b):  # song i does not depend on how many songs are made
        assert pa.read_bytes() == pb.read_bytes()
    info = sf.info(str(a[0]))
    assert (info.samplerate, info.channels, info.frames) == (RATE, 1, 2 * RATE)


def test_songs_contrast_and_are_not_clipped():
    songs = [_song(0, i, seconds=4.0, rate=16000) for i in range(8)]
    for x in songs:
        assert x.dtype == np.float32 and len(x) == 4 * 16000
        assert np.isfinite(x).all() and np.abs(x).max() < 1.0
        assert 0.08 < np.sqrt(np.mean(x.astype(np.float64) ** 2)) < 0.16
    centroids = [_centroid(x, 16000) for x in songs]
    assert max(centroids) / min(centroids) > 1.5  # bright and dark songs
    corr = np.corrcoef(np.stack(songs))
    assert np.abs(corr[np.triu_indices(len(songs), 1)]).max() < 0.5


def test_structure_repeats():
    # The loop makes a continuation predictable: loop 2 correlates strongly with loop 1 (same
    # drums, bass, chords; a varied melody), while a window shifted by a third of a loop does not.
    for seed in (0, 1):
        style = dm.random_style(np.random.default_rng([seed, 0]))  # the song's first draw
        loop = int(
            round(style.bars_per_chord * len(style.progression) * 16 * 60 / style.tempo / 4 * RATE)
        )
        x = _song(seed, 0, seconds=3 * loop / RATE + 0.5)
        first, second = x[loop : 2 * loop], x[2 * loop : 3 * loop]
        shifted = x[loop + loop // 3 : 2 * loop + loop // 3]
        assert np.corrcoef(first, second)[0, 1] > 0.6
        assert abs(np.corrcoef(first, shifted)[0, 1]) < 0.2


def test_ensure_demo_dataset_builds_once(tmp_path, monkeypatch):
    data = tmp_path / "demo"
    out = dm.ensure_demo_dataset(
        data,
        seed=0,
        num_songs=3,
        seconds=3.0,
        sample_rate=RATE,
        segment_seconds=0.5,
        progress=False,
    )
    assert out == data
    records = [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 3 * 5  # 6 segments of 0.5 s per song -> 5 pairs
    assert {r["split"] for r in records} == {"train", "val"}
    assert sorted(p.name for p in (data / dm.SONGS_DIRNAME).iterdir()) == [
        f"demo_song_{i:03d}.wav" for i in range(3)
    ]
    info = json.loads((data / "dataset_info.json").read_text())
    assert info["sample_rate"] == RATE and info["segment_seconds"] == 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # no temporary folders

    def fail(*args, **kwargs):
        raise AssertionError("songs were synthesized again")

    monkeypatch.setattr(dm, "make_demo_songs", fail)
    stamp = (data / "manifest.jsonl").stat().st_mtime_ns
    assert dm.ensure_demo_dataset(data, seed=0, num_songs=3, seconds=3.0, sample_rate=RATE) == data
    assert (data / "manifest.jsonl").stat().st_mtime_ns == stamp


def test_cli_songs_only(tmp_path, capsys):
    out = tmp_path / "songs"
    assert (
        dm.main(
            [
                "--out",
                str(out),
                "--num_songs",
                "2",
                "--seconds",
                "1",
                "--sample_rate",
                str(RATE),
                "--songs_only",
            ]
        )
        == 0
    )
    assert len(list(Path(out).glob("*.wav"))) == 2
    assert dm.main(["--out", str(tmp_path / "x"), "--num_songs", "0", "--songs_only"]) == 2
    assert capsys.readouterr().err.startswith("error:")
