"""The launcher (train_simple_ddp.py, a fresh interpreter) meets a corrupted
checkpoint_last.pth: one line naming it, no traceback. The checkpoint files themselves:
tests/unit/runtime/test_checkpoint.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import ROOT

pytestmark = pytest.mark.slow


def test_cli_reports_corrupted_checkpoint_last_clearly(tmp_path):
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    (data / "train" / "pair_00000_input.wav").touch()  # found by name; never opened here
    (data / "train" / "pair_00000_output.wav").touch()
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "checkpoint_last.pth").write_bytes(b"PK\x03\x04 truncated zip")
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train_simple_ddp.py"),
            "--dataset_folder",
            str(data),
            "--checkpoint_dir",
            str(runs),
            "--resume",
            "auto",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "checkpoint_last.pth" in lines[0] and "corrupted or truncated" in lines[0]
    assert "Traceback" not in result.stderr
