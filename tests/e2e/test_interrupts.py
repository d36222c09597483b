"""A real SIGINT (what Ctrl-C sends) in the middle of a tool's work: one line, exit status 130,
no temporary or half-written file left, the output not created."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
RATE = 24_000


def _songs(folder: Path, count: int, seconds: float) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * RATE)) / RATE
    for index in range(count):
        tone = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 1000) * t)
        sf.write(folder / f"song_{index:03d}.wav", tone.astype(np.float32), RATE)
    return folder


def _interrupt_when(process: subprocess.Popen, started, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not started():
        if process.poll() is not None:
            pytest.fail(f"finished before it could be interrupted: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("never started its work")
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "songweave.data.prepare_cli"],
        [sys.executable, "-m", "songweave", "prepare-pairs"],
    ],
    ids=["module", "tool"],
)
def test_sigint_in_prepare_pairs(command, tmp_path):
    songs = _songs(tmp_path / "songs", 60, 20.0)
    out = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [*command, "--layout", "pairs", "--songs", str(songs), "--out", str(out), "--workers", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
    )

    def staging_has_files() -> bool:
        return any(p.is_file() for p in tmp_path.glob(".data*/staging/*"))

    _interrupt_when(process, staging_has_files)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr + stdout
    lines = [line for line in stderr.splitlines() if "interrupted" in line]
    assert lines == [lines[-1]] and lines[-1].endswith("interrupted (Ctrl-C)"), stderr
    assert stderr.splitlines()[-1] == lines[-1]
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["songs"], list(tmp_path.iterdir())
