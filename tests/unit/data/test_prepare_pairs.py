"""prepare_pairs: formats, rates, channels, bad files, split by song, determinism, atomic output."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from songweave.data import prepare_cli
from songweave.data import prepare_pairs as pp
from songweave.data.prepare_pairs import PrepareConfig, prepare_pairs
from songweave.runtime.cli import module_env

RATE = 8000  # output rate of the tests: small files, fast
SEGMENT = 0.5  # seconds

# name -> (sample rate, channels, seconds, expected pairs at 0.5 s segments)
GOOD = {
    "a_mono16k.wav": (16000, 1, 3.2, 5),
    "b_stereo44k.flac": (44100, 2, 2.6, 4),
    "sub/c_6ch48k.ogg": (48000, 6, 2.1, 3),
    "sub/deeper/d_mono48k.wav": (48000, 1, 2.3, 3),
    "e_stereo22k.aiff": (22050, 2, 1.6, 2),
}
if "MP3" in sf.available_formats():  # libsndfile >= 1.1 reads and writes mp3
    GOOD["f_stereo44k.mp3"] = (44100, 2, 1.7, 2)
BAD = {  # name -> skip reason
    "corrupt.wav": "unreadable",
    "empty.wav": "empty",
    "text.wav": "unreadable",
    "short.wav": "too-short",
    "nan.wav": "non-finite",
    "silent.flac": "silent",
}


def _music(rng: np.random.Generator, rate: int, channels: int, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    tones = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in rng.uniform(100, 1500, 3))
    mono = 0.1 * tones + 0.05 * rng.normal(size=len(t))
    return np.stack([mono * (1 - 0.1 * c) for c in range(channels)], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("songs")
    rng = np.random.default_rng(0)
    for name, (rate, channels, seconds, _) in GOOD.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        subtype = {".ogg": "VORBIS", ".mp3": "MPEG_LAYER_III"}.get(path.suffix, "PCM_16")
        sf.write(str(path), _music(rng, rate, channels, seconds), rate, subtype=subtype)
    full = root / "full.wav"
    sf.write(str(full), _music(rng, 16000, 1, 2.0), 16000)
    (root / "corrupt.wav").write_bytes(full.read_bytes()[:30])  # header cut mid-way
    full.unlink()
    (root / "empty.wav").write_bytes(b"")
    (root / "text.wav").write_text("this is not audio, just a text file with a .wav name\n" * 20)
    sf.write(str(root / "short.wav"), _music(rng, 16000, 1, 0.5), 16000)
    nan = _music(rng, 16000, 1, 2.0)
    nan[1000] = np.nan
    sf.write(str(root / "nan.wav"), nan, 16000, subtype="FLOAT")
    sf.write(str(root / "silent.flac"), np.zeros(32000, np.float32), 16000)
    (root / "notes.txt").write_text("ignored: not an audio extension")
    sf.write(str(root / ".hidden.wav"), _music(rng, 16000, 1, 2.0), 16000)  # ignored: hidden
    return root


def _config(**kw) -> PrepareConfig:
    base = dict(segment_seconds=SEGMENT, sample_rate=RATE, progress=False, workers=2)
    base.update(kw)
    return PrepareConfig(**base)


def _manifest(data: Path) -> list[dict]:
    return [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def prepared(songs, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "DATA"
    return out, prepare_pairs(songs, out, _config())


def test_pair_counts_rate_duration_and_layout(prepared):
    out, summary = prepared
    expected = sum(v[3] for v in GOOD.values())
    assert summary.num_pairs == expected
    assert summary.songs_found == len(GOOD) + len(BAD)
    assert summary.songs_read == len(GOOD) + 2  # + short.wav and silent.flac decode fine
    records = _manifest(out)
    assert len(records) == expected
    for split in pp.SPLITS:
        indices = [r["index"] for r in records if r["split"] == split]
        assert indices == list(range(summary.pairs_per_split[split]))  # continuous numbering
        files = sorted(p.name for p in (out / split).iterdir())
        assert files == sorted(
            f"pair_{i:05d}_{side}.wav" for i in indices for side in ("input", "output")
        )
    per_song = {}
    for r in records:
        per_song[r["source"]] = per_song.get(r["source"], 0) + 1
        assert r["duration"] == SEGMENT and r["num_samples"] == int(SEGMENT * RATE)
        assert r["target_start"] == pytest.approx(r["input_start"] + SEGMENT)
        for key in ("input_file", "output_file"):
            info = sf.info(str(out / r[key]))
            assert (info.samplerate, info.channels, info.frames) == (RATE, 1, int(SEGMENT * RATE))
            assert info.subtype == "FLOAT"
    assert per_song == {name: v[3] for name, v in GOOD.items()}
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["sample_rate"] == RATE and info["segment_seconds"] == SEGMENT
    assert info["pairs"] == summary.pairs_per_split
    assert not list(out.parent.glob(".DATA*"))  # no temporary folders left behind


def test_split_by_song_and_continuation(prepared):
    out, summary = prepared
    records = _manifest(out)
    split_of = {}
    for r in records:
        assert split_of.setdefault(r["source"], r["split"]) == r["split"]  # one split per song
    assert sorted(set(split_of.values())) == ["train", "val"]
    assert summary.songs_per_split == {"train": len(GOOD) - 1, "val": 1}
    # Target of pair i is the input of pair i + 1 of the same song: consecutive segments.
    by_pos = {(r["source"], r["source_pair"]): r for r in records}
    for (source, i), r in by_pos.items():
        nxt = by_pos.get((source, i + 1))
        if nxt is not None:
            a, _ = sf.read(str(out / r["output_file"]), dtype="float32")
            b, _ = sf.read(str(out / nxt["input_file"]), dtype="float32")
            np.testing.assert_array_equal(a, b)


def test_downmix_and_resample_match_reference(prepared, songs):
    out, _ = prepared
    name = "b_stereo44k.flac"
    source, rate = sf.read(str(songs / name), dtype="float32", always_2d=True)
    ref = AF.resample(torch.from_numpy(source.mean(axis=1)), rate, RATE).numpy()
    r = next(r for r in _manifest(out) if r["source"] == name and r["source_pair"] == 1)
    got, _ = sf.read(str(out / r["input_file"]), dtype="float32")
    start = int(r["input_start"] * RATE)
    np.testing.assert_allclose(got, ref[start : start + len(got)], atol=1e-6)


def test_resampler_is_anti_aliased(tmp_path):
    # A 6 kHz tone is above the 4 kHz Nyquist limit of 8 kHz output: it must vanish, not fold
    # back to 2 kHz as naive decimation would.
    t = np.arange(48000) / 48000
    path = tmp_path / "tone.wav"
    sf.write(
        str(path), (0.5 * np.sin(2 * np.pi * 6000 * t)).astype(np.float32), 48000, subtype="FLOAT"
    )
    out = pp.load_mono(path, RATE)
    assert len(out) == RATE
    assert np.sqrt(np.mean(out[500:-500] ** 2)) < 0.01 * 0.5 / np.sqrt(2)


def test_skip_summary_names_files_and_reasons(prepared):
    _, summary = prepared
    by_reason = summary.skipped_by_reason()
    expected: dict[str, list[str]] = {}
    for name, reason in sorted(BAD.items()):
        expected.setdefault(reason, []).append(name)
    assert {k: sorted(v) for k, v in by_reason.items()} == expected
    text = summary.format()
    for name in BAD:
        assert name in text
    for reason in set(BAD.values()):
        assert pp.SKIP_REASONS[reason] in text
    assert "x real time" in text and "train:" in text and "val:" in text


def test_deterministic(prepared, songs, tmp_path):
    out, _ = prepared
    again = tmp_path / "DATA2"
    prepare_pairs(songs, again, _config(workers=1))  # serial decode gives the same result
    for name in ("manifest.jsonl", "dataset_info.json"):
        assert (out / name).read_bytes() == (again / name).read_bytes()
    for r in _manifest(out):
        for key in ("input_file", "output_file"):
            assert (out / r[key]).read_bytes() == (again / r[key]).read_bytes()


def test_refuses_then_overwrites_cleanly(songs, tmp_path, capsys):
    out = tmp_path / "DATA"
    first = prepare_pairs(songs, out, _config())
    before = (out / "manifest.jsonl").read_text()
    with pytest.raises(FileExistsError, match="--overwrite"):
        prepare_pairs(songs, out, _config(segment_seconds=1.0))
    assert (out / "manifest.jsonl").read_text() == before  # untouched
    # The CLI turns the refusal into one line and exit status 2.
    args = [
        "--layout",
        "pairs",
        "--songs",
        str(songs),
        "--out",
        str(out),
        "--sample_rate",
        str(RATE),
        "--progress",
        "false",
    ]
    assert prepare_cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "--overwrite" in err and "\n" not in err
    # With --overwrite: a 1 s segment run replaces the 0.5 s run entirely, no stale pairs left.
    assert prepare_cli.main(args + ["--segment_seconds", "1.0", "--overwrite"]) == 0
    second = _manifest(out)
    assert 0 < len(second) < first.num_pairs
    assert all(r["duration"] == 1.0 for r in second)
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav"))
    listed = sorted(r[k] for r in second for k in ("input_file", "output_file"))
    assert on_disk == listed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DATA"]  # no partial/old folders


def test_interrupted_run_leaves_previous_data_intact(songs, tmp_path, monkeypatch):
    out = tmp_path / "DATA"
    prepare_pairs(songs, out, _config())
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    calls = {"n": 0}
    real_write = pp.write_wav

    def failing_write(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt  # like Ctrl-C in the middle of the run
        return real_write(*args, **kwargs)

    monkeypatch.setattr(pp, "write_wav", failing_write)
    with pytest.raises(KeyboardInterrupt):
        prepare_pairs(songs, out, _config(overwrite=True, segment_seconds=0.25))
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DATA"]


def test_select_pairs_and_assign_splits():
    rms = np.array([0.1, 0.1, 0.0, 0.1, 0.1, 0.1, 0.1])
    ids, silent = pp.select_pairs(rms, 1e-3, None)
    assert ids == [0, 3, 4, 5] and silent == 2
    ids, _ = pp.select_pairs(rms, 1e-3, 2)
    assert ids == [0, 5]  # spread over the song, not the first two
    songs = [f"s{i:02d}.wav" for i in range(20)]
    split = pp.assign_splits(songs, 0.1, seed=0)
    assert sum(v == "val" for v in split.values()) == 2
    assert split == pp.assign_splits(list(reversed(songs)), 0.1, seed=0)  # order-free
    assert any(pp.assign_splits(songs, 0.1, seed=s) != split for s in range(1, 5))
    assert list(pp.assign_splits(["a", "b"], 0.01, 0).values()).count("val") == 1
    assert set(pp.assign_splits(["a"], 0.5, 0).values()) == {"train"}
    assert set(pp.assign_splits(songs, 0.0, 0).values()) == {"train"}


def test_bad_options_are_one_line_errors(songs, tmp_path):
    with pytest.raises(ValueError, match="--segment_seconds"):
        prepare_pairs(songs, tmp_path / "x", _config(segment_seconds=0))
    with pytest.raises(ValueError, match="--val_fraction"):
        prepare_pairs(songs, tmp_path / "x", _config(val_fraction=1.0))
    with pytest.raises(FileNotFoundError, match="--songs"):
        prepare_pairs(tmp_path / "missing", tmp_path / "x", _config())


def test_cli_no_pairs_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.wav").write_bytes(b"")
    (bad / "text.wav").write_text("not audio")
    out = tmp_path / "DATA"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "songweave.data.prepare_cli",
            "--layout",
            "pairs",
            "--songs",
            str(bad),
            "--out",
            str(out),
            "--progress",
            "false",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=module_env(),
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no pairs")
    assert "empty" in lines[0] and "unreadable" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad"]
