"""creative-bench runs in a fresh interpreter: the step mode, end to end with latent loss and
activation checkpointing, the precision check, the stock layers; each writes its JSON and table.
The bench's parts, flags and the model's fast layers: tests/unit/bench/test_bench.py."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import BENCH_TINY_ARGS, ROOT

pytestmark = pytest.mark.slow


def _run_bench(tmp_path: Path, *extra: str) -> dict:
    json_path = tmp_path / "bench.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "songweave.bench.main",
            *BENCH_TINY_ARGS,
            "--json",
            str(json_path),
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    last_line = completed.stdout.strip().splitlines()[-1]
    result = json.loads(last_line)
    assert json.loads(json_path.read_text()) == result
    assert "MFU" in completed.stdout  # the readable table comes first
    return result


def _check_fields(result: dict) -> None:
    step = result["step_time_s"]
    assert result["steps_timed"] == 2
    assert 0 < step["min"] <= step["median"] <= step["max"]
    assert (
        result["samples_per_s"] > 0
        and result["latent_frames_per_s"] == result["samples_per_s"] * 16
    )
    assert result["flops_per_step"] == 3 * result["flops_breakdown"]["forward"] > 0
    assert result["achieved_gflops"] > 0 and result["peak_matmul_gflops"] > 0
    assert abs(result["mfu"] - result["achieved_gflops"] / result["peak_matmul_gflops"]) < 1e-9
    assert 0 <= result["outside_model_share"] and result["codec_and_loss_s_per_step"] > 0
    assert result["peak_memory_bytes"] > 0
    cpu = result["cpu_time"]  # --threads 1: the load-immune figures too
    assert cpu["step_s"]["median"] > 0 and cpu["peak_matmul_gflops"] > 0 and 0 < cpu["mfu"]
    assert 0 <= cpu["outside_model_share"]


def test_bench_step_mode_json(tmp_path):
    result = _run_bench(tmp_path)
    _check_fields(result)
    assert result["config"]["codec"] == "mdct" and result["config"]["loss_domain"] == "audio"
    assert (
        result["config"]["use_creative_agent"] and result["config"]["num_transformer_layers"] == 2
    )


def test_bench_end_to_end_latent_checkpointing(tmp_path):
    result = _run_bench(
        tmp_path,
        "--end_to_end",
        "--epochs",
        "2",
        "--num_workers",
        "0",
        "--loss_domain",
        "latent",
        "--activation_checkpointing",
    )
    _check_fields(result)
    e2e = result["end_to_end"]
    assert e2e["num_pairs"] == 4 and len(e2e["epochs"]) == 2 and e2e["epochs"][1]["steps"] == 2
    assert 0 <= e2e["data_wait_share"] < 1


def test_bench_precision_check_compares_validation_losses(tmp_path):
    result = _run_bench(
        tmp_path, "--precision", "bf16", "--val_loss_steps", "2", "--loss_domain", "latent"
    )
    check = result["precision_check"]
    assert check["train_steps"] == 2
    fp32, bf16 = check["val_loss_fp32"], check["val_loss_bf16"]
    assert fp32 > 0 and bf16 > 0 and fp32 != bf16  # two real runs, not one reported twice
    assert abs(check["relative_difference"] - (bf16 - fp32) / fp32) < 1e-12
    assert abs(check["relative_difference"]) < 0.05  # bf16 autocast with fp32 losses stays close


def test_bench_stock_layers_runs(tmp_path):
    result = _run_bench(tmp_path, "--stock_layers")
    _check_fields(result)
    assert result["config"]["stock_layers"]
