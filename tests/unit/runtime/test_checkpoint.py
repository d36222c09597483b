"""songweave/runtime/checkpoint.py: plain types, atomic writes, weights_only loads, clear errors,
--resume auto."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from songweave.runtime.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from songweave.runtime.rng_state import capture_rng_state, restore_rng_state
from songweave.runtime.training_state import find_resume_checkpoint


@dataclasses.dataclass
class _Config:
    lr: float = 1e-4
    folder: Path = Path("runs/x")


class _Opaque:
    pass


def _state(scale: float = 1.0) -> dict:
    return {
        "model_state_dict": {"w": torch.ones(3) * scale},
        "optimizer_state_dict": {},
        "epoch": 1,
    }


def test_round_trip_plain_types_only(tmp_path):
    path = save_checkpoint(
        tmp_path / "c.pth",
        {
            **_state(),
            "train_config": _Config(),
            "array": np.arange(3),
            "scalar": np.float32(0.5),
            "version": torch.__version__,
            "betas": (0.9, 0.999),
            "best": float("inf"),
            "none": None,
        },
    )
    # The raw torch.load with weights_only=True (what users and the seed snippet do).
    state = torch.load(path, weights_only=True)
    assert state["train_config"] == {"lr": 1e-4, "folder": "runs/x"}
    assert torch.equal(state["array"], torch.arange(3))
    assert state["scalar"] == 0.5 and type(state["version"]) is str
    assert state["betas"] == (0.9, 0.999) and state["best"] == float("inf")
    assert load_checkpoint(path)["epoch"] == 1


def test_non_plain_values_are_refused_at_save_time(tmp_path):
    with pytest.raises(CheckpointError, match=r"state\['extra'\]\['x'\]: _Opaque is not a plain"):
        save_checkpoint(tmp_path / "c.pth", {"extra": {"x": _Opaque()}})
    assert not (tmp_path / "c.pth").exists()


def test_non_finite_weights_are_never_written(tmp_path):
    save_checkpoint(tmp_path / "c.pth", _state())
    bad = _state(float("nan"))
    with pytest.raises(CheckpointError, match="non-finite values in model_state_dict"):
        save_checkpoint(tmp_path / "c.pth", bad)
    assert torch.equal(load_checkpoint(tmp_path / "c.pth")["model_state_dict"]["w"], torch.ones(3))


def test_write_is_atomic_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_last.pth"
    save_checkpoint(path, _state(1.0))

    def crash(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt  # e.g. killed mid-write

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, _state(2.0))
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model_state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_corrupted_file_gives_one_line_error_naming_it(tmp_path):
    path = tmp_path / "checkpoint_last.pth"
    save_checkpoint(path, _state())
    path.write_bytes(path.read_bytes()[:200])  # truncated
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "corrupted or truncated" in message
    assert "\n" not in message


def test_arbitrary_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model_state_dict": {}, "payload": _Opaque()}, path)
    with pytest.raises(CheckpointError, match="needs arbitrary pickled objects") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_and_non_dict(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint(tmp_path / "nope.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="top level is list"):
        load_checkpoint(tmp_path / "list.pth")


def test_find_resume_checkpoint(tmp_path):
    assert find_resume_checkpoint(tmp_path / "absent") is None
    assert find_resume_checkpoint(tmp_path) is None
    for epoch in (2, 10):
        save_checkpoint(tmp_path / f"checkpoint_epoch_{epoch}.pth", _state())
    save_checkpoint(tmp_path / "checkpoint_last.pth", _state())
    assert find_resume_checkpoint(tmp_path).path.name == "checkpoint_last.pth"
    (tmp_path / "checkpoint_last.pth").write_bytes(b"garbage")
    assert find_resume_checkpoint(tmp_path).path.name == "checkpoint_epoch_10.pth"  # newest valid
    for epoch in (2, 10):
        (tmp_path / f"checkpoint_epoch_{epoch}.pth").unlink()
    with pytest.raises(CheckpointError, match="checkpoint_last.pth: corrupted"):
        find_resume_checkpoint(tmp_path)  # never silently restart a long run from scratch


def test_rng_state_round_trip(tmp_path):
    state = capture_rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random())
    save_checkpoint(tmp_path / "rng.pth", {"rng_state": state})
    restore_rng_state(load_checkpoint(tmp_path / "rng.pth")["rng_state"])
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0])
    assert np.array_equal(first[1], second[1]) and first[2] == second[2]
