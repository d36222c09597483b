"""creative-gpu-check: flags, the one-line refusal without CUDA, the report. Its checks run on
CPU: tests/e2e/test_gpu_check_runs.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from songweave.runtime.cli import module_env
from songweave.tools import gpu_check
from songweave.tools.gpu_check import CheckResult, GpuCheckConfig, UsageError


def test_defaults_and_flags():
    assert gpu_check.parse_args([]) == GpuCheckConfig()
    config = gpu_check.parse_args(
        [
            "--out",
            "x",
            "--world_size",
            "2",
            "--timeout_s",
            "60",
            "--bench_steps",
            "3",
            "--keep_work",
        ]
    )
    assert config == GpuCheckConfig(
        out="x", world_size=2, timeout_s=60.0, bench_steps=3, keep_work=True
    )
    assert (config.device, config.precision, config.compile) == ("cuda", "bf16", True)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--world_size", "-1"], "--world_size must be >= 0, got -1"),
        (["--timeout_s", "0"], "--timeout_s must be > 0"),
        (["--bench_steps", "0"], "--bench_steps must be >= 1"),
        (["--world_size", "two"], "invalid int value: 'two'"),
        (["--precision", "fp32"], "unrecognized arguments: --precision fp32"),
    ],
)
def test_bad_flags_are_one_line_usage_errors(argv, message):
    with pytest.raises(UsageError, match=message):
        gpu_check.parse_args(argv)


def test_without_cuda_the_command_refuses_in_one_line():
    # A fresh interpreter with CUDA hidden: the exact experience on a CPU-only machine.
    done = subprocess.run(
        [sys.executable, "-m", "songweave.tools.gpu_check"],
        capture_output=True,
        text=True,
        timeout=120,
        env=module_env({"CUDA_VISIBLE_DEVICES": "", "PATH": ""}),
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no CUDA device is available")


def test_more_processes_than_gpus_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert gpu_check.cuda_world_size(0) == 2 and gpu_check.cuda_world_size(1) == 1
    with pytest.raises(UsageError, match="--world_size 3 needs 3 GPUs, 2 visible"):
        gpu_check.cuda_world_size(3)


def test_any_failed_check_fails_the_run_and_every_result_is_reported(monkeypatch, tmp_path, capsys):
    def passes(config, space):
        return CheckResult("first", True, 1.0, "fine")

    def fails(config, space):
        return CheckResult("second", False, 2.0, "broke (see second.log)")

    def crashes(config, space):
        raise RuntimeError("boom")

    monkeypatch.setattr(gpu_check, "cuda_world_size", lambda requested: 1)
    monkeypatch.setattr(gpu_check, "CHECKS", (passes, fails, crashes))
    assert gpu_check.main(["--out", str(tmp_path)]) == gpu_check.EXIT_FAILED
    rows = [line.split(maxsplit=3) for line in capsys.readouterr().out.splitlines()]
    assert ["first", "ok", "1.0", "fine"] in rows
    assert ["second", "FAILED", "2.0", "broke (see second.log)"] in rows
    assert ["crashes", "FAILED", "0.0", "RuntimeError: boom"] in rows
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [r["ok"] for r in summary["results"]] == [True, False, False]
    assert (tmp_path / "summary.txt").read_text().startswith("check")
    monkeypatch.setattr(gpu_check, "CHECKS", (passes,))
    assert gpu_check.main(["--out", str(tmp_path)]) == gpu_check.EXIT_OK
