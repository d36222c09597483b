"""submit_creative_agent.sh under faked SLURM variables, on CPU, through the srun code path.
Its header and default command: tests/unit/test_submit_script.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import ROOT, TINY_ARGS

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "submit_creative_agent.sh"


def _env(data: Path, ckpt: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(
        SLURM_JOB_ID="4242",
        SLURM_NTASKS="2",
        SLURM_NODELIST="localhost",
        PYTHON=sys.executable,
        DATA=str(data),
        CKPT_DIR=str(ckpt),
        EPOCHS="1",
        BATCH_SIZE="2",
        NUM_WORKERS="0",
        OMP_NUM_THREADS="1",
        EXTRA_ARGS=" ".join(TINY_ARGS + ["--max_steps_per_epoch", "2"]),
    )
    if shutil.which("srun"):  # a real SLURM client here: force the local emulation
        env["LAUNCH"] = "local"
    env.update(extra)
    return env


def test_runs_under_faked_slurm_and_resumes_after_requeue(tmp_path, data):
    ckpt = tmp_path / "ckpt"
    first = subprocess.run(
        ["bash", str(SCRIPT)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        env=_env(data, ckpt),
    )
    output = first.stdout + first.stderr
    assert first.returncode == 0, output[-3000:]
    assert "running 2 local task(s)" in output
    assert "slurm launch: rank 0 of 2" in output  # the same path as under srun
    assert (tmp_path / "logs").is_dir()
    state = torch.load(ckpt / "checkpoint_last.pth", weights_only=True)
    assert state["epoch"] == 1 and len(state["rng_states"]) == 2

    # What a requeued job does: the same script again, --resume auto picks checkpoint_last.pth.
    second = subprocess.run(
        ["bash", str(SCRIPT)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        env=_env(data, ckpt, EPOCHS="2", SLURM_NTASKS="1", SLURM_RESTART_COUNT="1"),
    )
    output = second.stdout + second.stderr
    assert second.returncode == 0, output[-3000:]
    assert "continuing from" in output and "checkpoint_last.pth" in output
    epochs = [
        json.loads(line)["epoch"] for line in (ckpt / "metrics.jsonl").read_text().splitlines()
    ]
    assert epochs == [0, 1, 2]


def test_sigusr1_saves_and_requeues(tmp_path, data):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    calls = tmp_path / "scontrol_calls.txt"
    scontrol = fake_bin / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\n')
    scontrol.chmod(0o755)
    ckpt = tmp_path / "ckpt"
    env = _env(
        data,
        ckpt,
        SLURM_NTASKS="1",
        EPOCHS="1000",
        PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}",
        EXTRA_ARGS=" ".join(TINY_ARGS + ["--batch_size", "1", "--sync_every", "1"]),
    )
    process = subprocess.Popen(
        ["bash", str(SCRIPT)],
        cwd=tmp_path,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        metrics = ckpt / "metrics.jsonl"
        while time.monotonic() < deadline and process.poll() is None:
            if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
                break
            time.sleep(0.2)
        assert process.poll() is None, process.stdout.read()[-3000:]
        process.send_signal(signal.SIGUSR1)  # what SLURM sends 120 s before the time limit
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output[-3000:]
    assert calls.read_text().split() == ["requeue", "4242"]
    state = torch.load(ckpt / "checkpoint_last.pth", weights_only=True)
    assert state["epoch"] >= 1
