"""songweave/audio/io.py: block-wise reading equals whole-file resampling; precise one-line
errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from songweave.audio import io as audio_io
from songweave.audio.io import AudioFileError, StreamResampler, check_output_path, read_mono
from songweave.data import prepare_pairs as pp
from songweave.inference import arrange


def _noise(frames: int, channels: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal((frames, channels))).astype(np.float32)


def _whole_file(path: Path, rate: int) -> np.ndarray:
    data, source_rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    if source_rate == rate:
        return mono
    return AF.resample(torch.from_numpy(np.ascontiguousarray(mono)), source_rate, rate).numpy()


@pytest.mark.parametrize(
    "source_rate, channels, frames, block",
    [
        (96000, 8, 40000, 4097),  # many blocks, not aligned to anything
        (44100, 2, 30011, 1000),
        (22050, 1, 9000, 100000),  # one block
        (48000, 3, 50, 7),  # shorter than the resampler's context
        (24000, 2, 5000, 999),  # no resampling
    ],
)
def test_block_reading_equals_whole_file_resampling(tmp_path, source_rate, channels, frames, block):
    path = tmp_path / "song.wav"
    sf.write(str(path), _noise(frames, channels), source_rate, subtype="FLOAT")
    got = read_mono(path, 24000, block_frames=block)
    want = _whole_file(path, 24000)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_stream_resampler_sizes_its_output_like_torchaudio():
    for source_rate, target_rate, n in [(96000, 24000, 1), (44100, 24000, 3), (8000, 24000, 0)]:
        resampler = StreamResampler(source_rate, target_rate)
        out = np.concatenate([resampler.push(np.ones(n, np.float32)), resampler.finish()])
        expected = AF.resample(torch.ones(n), source_rate, target_rate).numel() if n else 0
        assert len(out) == expected
    with pytest.raises(RuntimeError, match="push after finish"):
        resampler.push(np.ones(3, np.float32))


def test_output_grows_when_the_header_undercounts():
    output = audio_io._Output(2)
    output.append(np.arange(3, dtype=np.float32))
    output.append(np.arange(4, dtype=np.float32))
    assert output.result().tolist() == [0, 1, 2, 0, 1, 2, 3]


def _make_bad_inputs(folder: Path) -> dict[str, Path]:
    (folder / "song.wav").mkdir()
    loop = folder / "loop.wav"
    loop.symlink_to(folder / "loop2.wav")
    (folder / "loop2.wav").symlink_to(loop)
    (folder / "dangling.wav").symlink_to(folder / "gone.wav")
    os.mkfifo(folder / "pipe.wav")
    (folder / "empty.wav").write_bytes(b"")
    (folder / "text.wav").write_text("not audio at all")
    nan = _noise(2000, 2)
    nan[100, 1] = np.nan
    sf.write(str(folder / "nan.wav"), nan, 48000, subtype="FLOAT")
    return {
        "missing": folder / "missing.wav",
        "folder": folder / "song.wav",
        "symlink-loop": loop,
        "broken-symlink": folder / "dangling.wav",
        "not-a-file": folder / "pipe.wav",
        "empty": folder / "empty.wav",
        "unreadable": folder / "text.wav",
        "non-finite": folder / "nan.wav",
    }


def test_each_bad_input_is_named_precisely(tmp_path):
    cases = _make_bad_inputs(tmp_path)
    assert sorted(cases) == sorted(audio_io.AUDIO_REASONS[:5] + audio_io.AUDIO_REASONS[6:])
    phrases = {
        "missing": "audio file not found",
        "folder": "is a folder, not an audio file",
        "symlink-loop": "symbolic link loop",
        "broken-symlink": "broken symbolic link",
        "not-a-file": "not a regular file",
        "empty": "empty file",
        "unreadable": "unreadable or not audio",
        "non-finite": "1 NaN/inf samples",
    }
    for reason, path in cases.items():
        with pytest.raises(AudioFileError) as info:
            read_mono(path, 24000)
        assert info.value.reason == reason
        message = str(info.value)
        assert message.startswith(f"{path}: {phrases[reason]}") and "\n" not in message
        with pytest.raises(ValueError, match=phrases[reason]):  # what arrange.main catches
            arrange.read_song(path, 24000)


def test_unreadable_permissions(tmp_path, monkeypatch):
    path = tmp_path / "song.wav"
    sf.write(str(path), _noise(100, 1), 24000)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(audio_io, "open", denied, raising=False)  # root ignores chmod
    with pytest.raises(AudioFileError, match="permission denied: cannot read it") as info:
        read_mono(path, 24000)
    assert info.value.reason == "permission"


def test_prepare_pairs_maps_reasons_to_its_skip_keys(tmp_path):
    cases = _make_bad_inputs(tmp_path)
    for reason, path in cases.items():
        with pytest.raises(pp._Skip) as info:
            pp.load_mono(path, 24000)
        assert info.value.reason == (reason if reason in pp.SKIP_REASONS else "unreadable")
    with pytest.raises(pp._Skip) as info:
        pp.load_mono(cases["symlink-loop"], 24000)
    assert info.value.detail.startswith("symbolic link loop")


def test_check_output_path(tmp_path, monkeypatch):
    assert check_output_path(tmp_path / "new" / "out.wav") == tmp_path / "new" / "out.wav"
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == []  # probe removed
    with pytest.raises(ValueError, match="is a folder; give a file name, e.g. .*output.wav"):
        check_output_path(tmp_path)
    with pytest.raises(ValueError, match="is a folder"):
        check_output_path(f"{tmp_path / 'new'}{os.sep}")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="cannot create folder .*a file of that name exists"):
        check_output_path(tmp_path / "file" / "out.wav")
    (tmp_path / "loop.wav").symlink_to(tmp_path / "loop.wav")
    with pytest.raises(ValueError, match="broken or looping symbolic link"):
        check_output_path(tmp_path / "loop.wav")
    os.mkfifo(tmp_path / "pipe.wav")
    with pytest.raises(ValueError, match="not a regular file"):
        check_output_path(tmp_path / "pipe.wav")

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(audio_io.tempfile, "mkstemp", read_only)
    with pytest.raises(ValueError) as info:
        check_output_path(tmp_path / "out.wav")
    assert (
        str(info.value) == f"{tmp_path / 'out.wav'}: cannot write in {tmp_path} (Read-only "
        f"file system)"
    )
