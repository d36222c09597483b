"""submit_creative_agent.sh: its #SBATCH header and the command it runs by default (DRY_RUN).
Runs under faked SLURM: tests/e2e/test_submit_script_runs.py."""

from __future__ import annotations

import os
import re
import subprocess

from helpers import ROOT

SCRIPT = ROOT / "submit_creative_agent.sh"


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
