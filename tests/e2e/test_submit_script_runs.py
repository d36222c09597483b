"""submit_creative_agent.sh under faked SLURM variables, on CPU, through the srun code path."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train_ddp import TINY_ARGS, make_tiny_dataset

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "submit_creative_agent.sh"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("data"))


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


def test_header_is_the_seed_configuration_without_personal_settings():
    text = SCRIPT.read_text()
    header = "\n".join(line for line in text.splitlines() if line.startswith("#SBATCH"))
    for expected in (
        "--nodes=1",
        "--ntasks-per-node=4",
        "--gres=gpu:a100:4",
        "--time=48:00:00",
        "--output=logs/creative_agent_%j.out",
        "--requeue",
        "--signal=USR1@",
    ):
        assert expected in header, expected
    assert not re.search(r"--(account|mail-user|mail-type|partition)\b", header)
    assert os.access(SCRIPT, os.X_OK)


def test_default_command_matches_the_seed(tmp_path, data):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SLURM_")
        and k not in ("EPOCHS", "BATCH_SIZE", "LR", "DATA", "CKPT_DIR", "EXTRA_ARGS")
    }
    result = subprocess.run(
        ["bash", str(SCRIPT)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env={**env, "DRY_RUN": "1"},
    )
    assert result.returncode == 0, result.stderr
    command = result.stdout
    for expected in (
        "--epochs 200",
        "--batch_size 8",
        "--lr 1e-4",
        "--use_creative_agent true",
        "--mask_reg_weight 0.1",
        "--shuffle_targets false",
        "--anti_cheating 0.1",
        "--num_transformer_layers 3",
        "--resume auto",
    ):
        assert expected in command, expected


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
