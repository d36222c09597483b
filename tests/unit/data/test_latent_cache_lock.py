"""The latent cache builds on file systems without flock (Lustre, some NFS mounts)."""

from __future__ import annotations

import errno
import fcntl
import logging

import pytest

from songweave.audio.codecs import get_codec
from songweave.data import latent_cache
from songweave.data.wav_pairs import WavPairsDataset
from tests.helpers import make_tiny_dataset


def _flock_fails(code: int):
    def flock(fd, operation):
        raise OSError(code, "Function not implemented")

    return flock


def test_a_file_system_without_flock_builds_the_cache_with_a_warning(tmp_path, monkeypatch, caplog):
    data = make_tiny_dataset(tmp_path / "data", train_pairs=3, val_pairs=1)
    monkeypatch.setattr(fcntl, "flock", _flock_fails(errno.ENOLCK))
    with caplog.at_level(logging.WARNING, logger=latent_cache.__name__):
        dataset = WavPairsDataset(data, get_codec("mdct"))
    assert dataset.built_cache
    assert len(dataset) == 3 and dataset[0]["input_latent"].ndim == 2
    assert "has no flock" in caplog.text
    monkeypatch.undo()
    assert not WavPairsDataset(data, get_codec("mdct")).built_cache  # the cache it wrote is whole


def test_other_lock_errors_are_not_swallowed(tmp_path, monkeypatch):
    monkeypatch.setattr(fcntl, "flock", _flock_fails(errno.EIO))
    with pytest.raises(OSError):
        with latent_cache.exclusive_lock(tmp_path / "lock", timeout_s=1.0):
            pass
