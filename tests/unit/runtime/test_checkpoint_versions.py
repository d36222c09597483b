"""A checkpoint's format version and a mid-epoch resume's batch size and world size: refused in
one line when they do not fit, never skipped or continued silently."""

from __future__ import annotations

import pytest
import torch

from songweave.runtime.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    CheckpointVersionError,
    load_checkpoint,
    save_checkpoint,
)
from songweave.runtime.training_state import check_resume_fits, find_resume_checkpoint


def _state(**changes):
    state = {
        "format_version": FORMAT_VERSION,
        "model_state_dict": {"w": torch.ones(3)},
        "optimizer_state_dict": {"state": {}, "param_groups": []},
        "epoch": 1,
        "batches_done": 0,
        "world_size": 2,
        "train_config": {"batch_size": 4},
    }
    state.update(changes)
    return state


@pytest.mark.parametrize(
    "version, message",
    [
        (99, "format version 99 is newer than this code reads"),
        (FORMAT_VERSION + 1, "is newer than this code reads"),
        (0, "unknown checkpoint format version 0"),
        ("1", "format_version '1' is not a version number"),
        (True, "format_version True is not a version number"),
    ],
)
def test_other_format_versions_are_refused(tmp_path, version, message):
    path = save_checkpoint(tmp_path / "c.pth", _state(format_version=version))
    with pytest.raises(CheckpointVersionError, match=message):
        load_checkpoint(path)


def test_a_checkpoint_without_a_version_is_version_one(tmp_path):
    state = _state()
    del state["format_version"]
    assert load_checkpoint(save_checkpoint(tmp_path / "c.pth", state))["epoch"] == 1


def test_resume_auto_never_falls_back_past_a_newer_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "checkpoint_best.pth", _state(epoch=1))
    save_checkpoint(tmp_path / "checkpoint_last.pth", _state(epoch=2, format_version=99))
    with pytest.raises(CheckpointVersionError, match="checkpoint_last.pth: checkpoint format"):
        find_resume_checkpoint(tmp_path)


@pytest.mark.parametrize(
    "batch_size, world_size, message",
    [
        (8, 2, "stopped mid-epoch with --batch_size 4; this run has --batch_size 8"),
        (4, 1, "stopped mid-epoch with 2 process\\(es\\); this run has 1"),
    ],
)
def test_a_mid_epoch_resume_with_other_sizes_is_refused(batch_size, world_size, message):
    with pytest.raises(CheckpointError, match=message):
        check_resume_fits("c.pth", _state(batch_size=4, batches_done=3), batch_size, world_size)


def test_an_end_of_epoch_resume_fits_any_sizes():
    check_resume_fits("c.pth", _state(batches_done=0), 16, 1)
    check_resume_fits("c.pth", _state(batches_done=3), 4, 2)
