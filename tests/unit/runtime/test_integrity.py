"""Checkpoint integrity: stored checksums, newest intact resume, failed writes, leftovers."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import socket
import subprocess
import sys
import zipfile
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from songweave.data.wav_pairs import WavPairsDataset
from songweave.runtime import checkpoint
from songweave.runtime.checkpoint import (
    BEST_NAME,
    LAST_NAME,
    CheckpointError,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
    save_training_checkpoints,
    verify_checkpoint_file,
)
from songweave.runtime.training_state import find_resume_checkpoint

HOST = socket.gethostname()


def _state(epoch: int = 1, best_epoch: int = 0, batches_done: int = 0) -> dict:
    generator = torch.Generator().manual_seed(epoch)
    return {
        "model_state_dict": {"w": torch.randn(64, 64, generator=generator)},
        "optimizer_state_dict": {},
        "epoch": epoch,
        "best_epoch": best_epoch,
        "batches_done": batches_done,
        "global_step": 10 * epoch + batches_done,
    }


def _record_span(path: Path, suffix: str) -> tuple[int, int]:
    """Byte offset and size of the zip record whose name ends with ``suffix``."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(suffix))
        with archive.open(info) as member:
            member.read(1)
        # The data starts after the local header (30 bytes + name + extra field).
        with open(path, "rb") as handle:
            handle.seek(info.header_offset + 26)
            name_len, extra_len = (int.from_bytes(handle.read(2), "little") for _ in range(2))
        return info.header_offset + 30 + name_len + extra_len, info.file_size


def _flip(path: Path, offset: int, count: int) -> None:
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


# ----------------------------------------------------------------------------- checksums


def test_flipped_bytes_in_a_weight_are_reported_as_corrupt(tmp_path):
    path = save_checkpoint(tmp_path / LAST_NAME, _state())
    offset, size = _record_span(path, "data/0")
    _flip(path, offset + size // 4, 400)
    # torch alone loads the damaged weights without complaint ...
    assert not torch.equal(
        torch.load(path, weights_only=True)["model_state_dict"]["w"],
        _state()["model_state_dict"]["w"],
    )
    # ... the stored checksum does not.
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path}: corrupt checkpoint: checksum mismatch in record")
    assert "data/0" in message and "\n" not in message


def test_flipped_bytes_in_the_pickle_are_reported(tmp_path):
    path = save_checkpoint(tmp_path / LAST_NAME, _state())
    offset, size = _record_span(path, "data.pkl")
    _flip(path, offset + size // 2, 4)
    with pytest.raises(CheckpointError, match="checksum mismatch in record .*data.pkl"):
        load_checkpoint(path)


def test_intact_and_legacy_checkpoints_load(tmp_path, caplog):
    path = save_checkpoint(tmp_path / "c.pth", _state())
    assert verify_checkpoint_file(path) is True
    legacy = tmp_path / "legacy.pth"
    torch.save(_state(), legacy, _use_new_zipfile_serialization=False)
    assert verify_checkpoint_file(legacy) is False
    with caplog.at_level(logging.DEBUG, logger="songweave.runtime.checkpoint"):
        state = load_checkpoint(legacy, mmap=True)
    assert state["epoch"] == 1
    assert "no stored checksums" in caplog.text


def test_checksums_are_written_even_when_turned_off_globally(tmp_path):
    torch.serialization.set_crc32_options(False)
    try:
        path = save_checkpoint(tmp_path / "c.pth", _state())
    finally:
        torch.serialization.set_crc32_options(True)
    assert verify_checkpoint_file(path) is True


def test_truncated_zip_and_folder(tmp_path):
    path = save_checkpoint(tmp_path / "c.pth", _state())
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        load_checkpoint(path)
    (tmp_path / "dir.pth").mkdir()
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path / "dir.pth")


# ----------------------------------------------------------------------------- resume


def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "checkpoint_epoch_2.pth", _state(2))
    save_checkpoint(tmp_path / BEST_NAME, _state(3, best_epoch=3))
    save_checkpoint(tmp_path / "checkpoint_epoch_4.pth", _state(4, best_epoch=3))
    save_checkpoint(tmp_path / LAST_NAME, _state(5, best_epoch=3))
    choice = find_resume_checkpoint(tmp_path)
    assert (choice.path.name, choice.epoch, choice.skipped) == (LAST_NAME, 5, ())

    offset, _ = _record_span(tmp_path / LAST_NAME, "data/0")
    _flip(tmp_path / LAST_NAME, offset + 8, 400)
    choice = find_resume_checkpoint(tmp_path)
    assert (choice.path.name, choice.epoch) == ("checkpoint_epoch_4.pth", 4)
    assert [s.path.name for s in choice.skipped] == [LAST_NAME]
    line = choice.describe()
    assert "checkpoint_epoch_4.pth (epoch 4)" in line and "\n" not in line
    assert f"skipped {LAST_NAME} (corrupt checkpoint: checksum mismatch" in line

    (tmp_path / "checkpoint_epoch_4.pth").write_bytes(b"")
    choice = find_resume_checkpoint(tmp_path)
    assert (choice.path.name, choice.epoch) == (BEST_NAME, 3)
    assert len(choice.skipped) == 2


def test_resume_prefers_a_newer_best_over_an_older_last(tmp_path):
    # A kill after checkpoint_best.pth was written and before checkpoint_last.pth.
    save_checkpoint(tmp_path / LAST_NAME, _state(4, best_epoch=4))
    save_checkpoint(tmp_path / BEST_NAME, _state(5, best_epoch=5))
    assert find_resume_checkpoint(tmp_path).path.name == BEST_NAME
    # Same progress: last wins; a mid-epoch last is newer than the epoch it started from.
    save_checkpoint(tmp_path / LAST_NAME, _state(5, best_epoch=5, batches_done=3))
    choice = find_resume_checkpoint(tmp_path)
    assert (choice.path.name, choice.batches_done) == (LAST_NAME, 3)
    assert "epoch 5 + 3 batch(es)" in choice.describe()


def test_resume_with_nothing_intact_refuses_in_one_line(tmp_path):
    assert find_resume_checkpoint(tmp_path) is None
    (tmp_path / LAST_NAME).write_bytes(b"")
    save_checkpoint(tmp_path / BEST_NAME, {"epoch": 1})  # not a training state
    with pytest.raises(CheckpointError) as info:
        find_resume_checkpoint(tmp_path)
    message = str(info.value)
    assert message.startswith(f"no intact checkpoint in {tmp_path}: {LAST_NAME}: ")
    assert f"{BEST_NAME}: not a training checkpoint" in message and "\n" not in message


def test_checkpoint_last_is_written_after_the_files_it_names(tmp_path, monkeypatch):
    written = save_training_checkpoints(tmp_path, _state(1, best_epoch=1), best=True, epoch_copy=1)
    assert [p.name for p in written] == [BEST_NAME, "checkpoint_epoch_1.pth", LAST_NAME]
    assert all(load_checkpoint(p)["epoch"] == 1 for p in written)

    real_copy = checkpoint.copy_checkpoint

    def killed_before_last(source, destination):
        if Path(destination).name == LAST_NAME:
            raise KeyboardInterrupt  # SIGKILL-like: nothing after this point happens
        return real_copy(source, destination)

    monkeypatch.setattr(checkpoint, "copy_checkpoint", killed_before_last)
    with pytest.raises(KeyboardInterrupt):
        save_training_checkpoints(tmp_path, _state(2, best_epoch=2), best=True)
    last = load_checkpoint(tmp_path / LAST_NAME)
    # The old last names best epoch 1; the best file on disk is as new or newer.
    assert last["best_epoch"] == 1 and load_checkpoint(tmp_path / BEST_NAME)["epoch"] == 2
    assert find_resume_checkpoint(tmp_path).epoch == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)


# ----------------------------------------------------------------------------- failed writes


class _FullDisk(io.FileIO):
    """A file whose device fills up after ``limit`` bytes."""

    limit = 3000

    def write(self, data):
        if self.tell() + len(memoryview(data)) > self.limit:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


def _open_failing_with(number: int):
    def fake_open(file, mode="r", *args, **kwargs):
        if "w" in mode and ".tmp-" in os.fspath(file):
            if number == errno.ENOSPC:
                return _FullDisk(file, "wb")
            raise OSError(number, os.strerror(number), os.fspath(file))
        return open(file, mode, *args, **kwargs)

    return fake_open


def test_disk_full_mid_write_is_one_line_and_keeps_the_previous_file(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / LAST_NAME, _state(1))
    monkeypatch.setattr(checkpoint, "open", _open_failing_with(errno.ENOSPC), raising=False)
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(path, _state(2))
    monkeypatch.undo()
    message = str(info.value)
    assert message.startswith(f"cannot write {path}: no space left on device (needs about ")
    assert " free); the previous checkpoint_last.pth is intact" in message
    assert "\n" not in message and "enforce fail" not in message
    assert [p.name for p in tmp_path.iterdir()] == [LAST_NAME]  # temporary removed
    assert load_checkpoint(path)["epoch"] == 1


@pytest.mark.parametrize(
    "number, text",
    [
        (errno.EACCES, "permission denied in"),
        (errno.EDQUOT, "disk quota exceeded"),
        (errno.EROFS, "read-only file system"),
    ],
)
def test_unwritable_destination_is_one_line(tmp_path, monkeypatch, number, text):
    monkeypatch.setattr(checkpoint, "open", _open_failing_with(number), raising=False)
    with pytest.raises(CheckpointError, match=text) as info:
        save_checkpoint(tmp_path / BEST_NAME, _state())
    assert "no checkpoint_best.pth existed before" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_too_little_free_space_is_refused_before_writing(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda _: usage(10**9, 10**9, 1000))
    with pytest.raises(
        CheckpointError,
        match=r"no space left on device \(needs about .* KiB, "
        r"1000 B free\)",
    ):
        save_checkpoint(tmp_path / LAST_NAME, _state())
    assert list(tmp_path.iterdir()) == []


def test_size_estimate_covers_the_written_file(tmp_path):
    state = _state()
    state["optimizer_state_dict"] = {"m": torch.zeros(1000), "view": torch.zeros(10)[2:5]}
    path = save_checkpoint(tmp_path / "c.pth", state)
    estimate = checkpoint.estimate_checkpoint_bytes(checkpoint.to_plain(state))
    assert path.stat().st_size <= estimate <= path.stat().st_size + 128 * 1024


# ----------------------------------------------------------------------------- leftovers


def test_remove_stale_temporaries(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {
            "dead_here": f".checkpoint_last.pth.tmp-{HOST}-{dead.pid}",
            "alive_here": f".checkpoint_best.pth.tmp-{HOST}-{alive.pid}",
            "ours": f".checkpoint_last.pth.tmp-{HOST}-{os.getpid()}",
            "other_host": f".checkpoint_epoch_3.pth.tmp-node-7-{dead.pid}",
            "old_style": f".checkpoint_last.pth.tmp-{dead.pid}",
            "not_ours": f".metrics.jsonl.tmp-{dead.pid}",
            "real": LAST_NAME,
        }
        for name in names.values():
            (tmp_path / name).write_bytes(b"x")
        removed = {p.name for p in remove_stale_temporaries(tmp_path)}
        assert removed == {names["dead_here"]}
        removed = {p.name for p in remove_stale_temporaries(tmp_path, run_lock_held=True)}
        assert removed == {names["alive_here"], names["other_host"], names["old_style"]}
        assert {p.name for p in tmp_path.iterdir()} == {
            names["ours"],
            names["not_ours"],
            names["real"],
        }
    finally:
        alive.kill()
        alive.wait()
    assert remove_stale_temporaries(tmp_path / "absent") == []


# ----------------------------------------------------------------------------- latent cache


class _FramesCodec(torch.nn.Module):
    """Latents are the audio cut into frames of ``dim`` samples (optionally NaN for one pair)."""

    name = "frames"
    sample_rate = 8000
    dim = 8
    frame_rate = 1000.0

    def __init__(self, nan_row: int | None = None):
        super().__init__()
        self.nan_row = nan_row
        self.encode_calls = 0

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.dim

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        self.encode_calls += 1
        frames = self.num_frames(wav.shape[-1])
        latents = wav[:, 0, : frames * self.dim].reshape(len(wav), frames, self.dim)
        latents = latents.transpose(1, 2).clone()
        if self.nan_row is not None:
            latents[self.nan_row, 0, 0] = float("nan")
        return latents

    def identity(self) -> dict:
        return {"name": self.name, "dim": self.dim}


@pytest.fixture
def pairs_data(tmp_path) -> Path:
    folder = tmp_path / "DATA" / "train"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for number in range(4):
        for role in ("input", "output"):
            sf.write(
                str(folder / f"pair_{number:05d}_{role}.wav"),
                (0.1 * rng.standard_normal(800)).astype(np.float32),
                8000,
                subtype="FLOAT",
            )
    return tmp_path / "DATA"


def _damage(path: Path, how: str) -> str:
    data = path.read_bytes()
    if how == "empty":
        path.write_bytes(b"")
        return "empty file (0 bytes)"
    if how == "truncated":
        path.write_bytes(data[:-100])
        return "truncated: "
    if how == "garbage":  # same size, finite values, header intact
        header = len(data) - 4 * 4 * 8 * 100
        noise = np.random.default_rng(1).uniform(-1, 1, (len(data) - header) // 4)
        path.write_bytes(data[:header] + noise.astype("<f4").tobytes())
        return "checksum mismatch (its contents changed after the cache was built)"
    if how == "nan":
        array = np.load(path, mmap_mode="r+")
        array[2, 3, 4] = np.nan
        array.flush()
        return "1 non-finite values (NaN/Inf)"
    path.write_bytes(b"\x93NUMPY garbage" + data[14:])  # header
    return "not a .npy array (header unreadable"


@pytest.mark.parametrize("how", ["empty", "truncated", "garbage", "nan", "header"])
def test_damaged_cache_file_is_named_and_rebuilt(pairs_data, caplog, how):
    first = WavPairsDataset(pairs_data, _FramesCodec())
    meta = json.loads((first.cache_dir / "meta.json").read_text())
    assert set(meta["checksums"]) == {"input_latents.npy", "target_latents.npy"}
    original = first[2]["input_latent"].clone()
    del first._arrays  # release the memmaps before damaging the file
    damaged = first.cache_dir / "input_latents.npy"
    phrase = _damage(damaged, how)

    codec = _FramesCodec()
    with caplog.at_level(logging.WARNING, logger="songweave.data.latent_cache"):
        second = WavPairsDataset(pairs_data, codec)
    assert second.built_cache and codec.encode_calls > 0
    assert f"damaged latent cache: {damaged}: {phrase}" in caplog.text
    assert torch.equal(second[2]["input_latent"], original)
    assert not WavPairsDataset(pairs_data, _FramesCodec()).built_cache  # repaired for good


def test_cache_without_checksums_still_opens(pairs_data, caplog):
    first = WavPairsDataset(pairs_data, _FramesCodec())
    meta_path = first.cache_dir / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["checksums"]  # built by an older version
    meta_path.write_text(json.dumps(meta))
    with caplog.at_level(logging.DEBUG, logger="songweave.data.latent_cache"):
        assert not WavPairsDataset(pairs_data, _FramesCodec()).built_cache
    assert "no checksum in meta.json" in caplog.text
    _damage(first.cache_dir / "target_latents.npy", "nan")  # values are still checked
    assert WavPairsDataset(pairs_data, _FramesCodec()).built_cache


def test_codec_producing_nan_is_refused_naming_the_pair(pairs_data):
    # Row 5 of a batch of 4 pairs encoded as [4 inputs, 4 targets]: the target of pair 1.
    with pytest.raises(ValueError) as info:
        WavPairsDataset(pairs_data, _FramesCodec(nan_row=5))
    message = str(info.value)
    assert message.startswith(str(pairs_data / "train" / "pair_00001_output.wav"))
    assert "non-finite latents from codec frames" in message and "\n" not in message
    assert not list((pairs_data / "cache").glob("*/train/meta.json"))


def test_ranks_opening_together_share_one_check(pairs_data, monkeypatch):
    from songweave.data import latent_cache

    first = WavPairsDataset(pairs_data, _FramesCodec())  # builds: nothing to check
    scans = []
    real_scan = latent_cache.scan_cache_file
    monkeypatch.setattr(
        latent_cache, "scan_cache_file", lambda path: scans.append(path.name) or real_scan(path)
    )
    WavPairsDataset(pairs_data, _FramesCodec())
    assert sorted(scans) == ["input_latents.npy", "target_latents.npy"]
    WavPairsDataset(pairs_data, _FramesCodec())  # another rank, moments later: no reading
    assert len(scans) == 2
    target = first.cache_dir / "target_latents.npy"
    stamp = target.stat().st_mtime_ns + 10**9
    os.utime(target, ns=(stamp, stamp))  # a file changed since: checked again
    WavPairsDataset(pairs_data, _FramesCodec())
    assert len(scans) == 4
    record_path = first.cache_dir / "verified.json"
    record = json.loads(record_path.read_text())
    record["at"] -= 3600  # a later run: checked again
    record_path.write_text(json.dumps(record))
    WavPairsDataset(pairs_data, _FramesCodec())
    assert len(scans) == 6


def test_byte_counts_are_readable():
    sizes = (5, 2048, 5 << 20, 3 << 30)
    assert [checkpoint._format_bytes(n) for n in sizes] == ["5 B", "2.0 KiB", "5.0 MiB", "3.0 GiB"]
