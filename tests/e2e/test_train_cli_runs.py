"""train_simple_ddp.py in a fresh interpreter: every refusal is one line with exit status 2 and
starts nothing. The flags themselves: tests/unit/train/test_train_cli.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, make_named_pair_dataset

pytestmark = pytest.mark.slow


@pytest.fixture
def dataset(tmp_path) -> Path:
    return make_named_pair_dataset(tmp_path)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "train_simple_ddp.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_cli_errors_are_one_line_with_exit_status_2(tmp_path, dataset):
    runs = tmp_path / "runs"
    for args in (
        ["--epochs", "x"],
        ["--use_creative_agent", "maybe"],
        [
            "--dataset_folder",
            str(dataset),
            "--checkpoint_dir",
            str(runs),
            "--use_creative_agent",
            "true",
            "--num_transformer_layers",
            "1",
        ],
        [
            "--dataset_folder",
            str(dataset),
            "--checkpoint_dir",
            str(runs),
            "--model_option",
            "no_such_argument=1",
        ],
    ):
        result = _cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)
    assert not runs.exists()  # nothing started
