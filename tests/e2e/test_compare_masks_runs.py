"""creative-compare-masks trains and evaluates every variant: comparison.json's schema, the
untrained agent keeps its initial weights, an interrupted comparison resumes. Flags and verdicts:
tests/unit/eval/test_compare_masks.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import make_compare_masks_data as tiny_data

from songweave.eval import compare_masks

pytestmark = pytest.mark.slow


# A tiny model on a 16-channel MDCT, one process: each training takes seconds.
TINY_TRAINING = [
    "--world_size",
    "1",
    "--codec_option",
    "dim=16",
    "--encoding_dim",
    "16",
    "--nhead",
    "2",
    "--num_layers",
    "1",
    "--model_option",
    "dim_feedforward=32",
    "--model_option",
    "agent_hidden_dim=16",
    "--batch_size",
    "2",
    "--tensorboard",
    "false",
    "--warmup_steps",
    "2",
]


SUMMARY_KEYS = {
    "checkpoint",
    "band_complementarity",
    "band_balance",
    "band_temporal_diversity",
    "band_pair_diversity",
    "content_alignment",
    "mr_stft",
    "si_sdr_db",
    "masked_mix_mr_stft",
    "masked_mix_si_sdr_db",
    "train_seconds",
    "run_wall_seconds",
    "run_cpu_seconds",
    "comparable",
}


def run(data: Path, out: Path, *flags: str) -> int:
    return compare_masks.main(
        [
            "--dataset_folder",
            str(data),
            "--out",
            str(out),
            "--progress",
            "false",
            *flags,
            "--",
            *TINY_TRAINING,
        ]
    )


def test_schema_skip_and_resume(tmp_path, capsys):
    data, out = tiny_data(tmp_path), tmp_path / "compare"
    assert run(data, out, "--epochs", "1") == 0
    printed = capsys.readouterr().out
    comparison = json.loads((out / "comparison.json").read_text())
    assert set(comparison) == {
        "agent",
        "untrained_agent",
        "temporal",
        "band_energy",
        "band_energy_median",
        "none",
        "arrangement",
        "verdicts",
        "settings",
    }
    assert comparison["arrangement"] is None  # no whole songs beside these pairs
    for variant in compare_masks.VARIANTS:
        summary = comparison[variant]
        assert SUMMARY_KEYS <= set(summary), variant
        assert Path(summary["checkpoint"]).is_file()
        assert Path(summary["checkpoint"]).parent == out / variant
        for key in SUMMARY_KEYS - {"checkpoint", "comparable"}:
            assert isinstance(summary[key], float), (variant, key)
        assert summary["train_seconds"] > 0 and summary["run_cpu_seconds"] > 0
        assert summary["comparable"] == (
            variant != "none" and 0.45 <= summary["band_balance"] <= 0.55
        )
    assert comparison["agent"]["mask_kind"] == "learned_agent"
    assert comparison["untrained_agent"]["mask_kind"] == "learned_agent"
    # `none` keeps both songs whole: its "masks" hide nothing and it is never comparable.
    assert comparison["none"]["band_complementarity"] == pytest.approx(0.0, abs=1e-6)
    assert comparison["none"]["comparable"] is False
    assert comparison["temporal"]["band_pair_diversity"] == 0.0
    assert set(comparison["verdicts"]) == {
        "agent_beats_untrained_agent_mr_stft",
        "agent_beats_temporal_mr_stft",
        "agent_beats_band_energy_mr_stft",
        "agent_beats_band_energy_median_mr_stft",
    }
    for verdict in comparison["verdicts"].values():
        assert verdict["beats"] in (True, False, None) and verdict["reason"]
    table = (out / "comparison.md").read_text()
    assert table in printed
    assert "| variant | band compl. | band balance |" in table
    assert sum(line.startswith("| ") for line in table.splitlines()) == 1 + 6
    assert "agent beats band_energy in MR-STFT distance to the target:" in table
    assert "agent beats untrained_agent in MR-STFT distance to the target:" in table
    assert_mask_generator_as_initialized(out / "untrained_agent")

    # Rerun after an interruption that lost temporal's evaluation: finished variants are
    # skipped, temporal is evaluated again without retraining.
    logs = {v: (out / v / "train.log").read_text() for v in compare_masks.VARIANTS}
    reports = {
        v: (out / v / "eval" / "report.json").stat().st_mtime_ns for v in compare_masks.VARIANTS
    }
    (out / "temporal" / "eval" / "report.json").unlink()
    assert run(data, out, "--epochs", "1") == 0
    printed = capsys.readouterr().out
    for variant in compare_masks.VARIANTS:
        assert (out / variant / "train.log").read_text() == logs[variant], variant
        if variant != "temporal":
            assert (out / variant / "eval" / "report.json").stat().st_mtime_ns == reports[variant]
            assert f"{variant}: finished and evaluated, skipped" in printed
    assert (out / "temporal" / "eval" / "report.json").is_file()

    # An unfinished training (its checkpoint holds 1 of 2 epochs) continues from its checkpoint.
    assert run(data, out, "--epochs", "2", "--variants", "agent") == 0
    agent_log = (out / "agent" / "train.log").read_text()
    assert agent_log.startswith(logs["agent"]) and "resumed from" in agent_log
    epochs = [
        json.loads(line)["epoch"]
        for line in (out / "agent" / "metrics.jsonl").read_text().splitlines()
    ]
    assert epochs == [0, 1, 2]
    assert json.loads((out / "comparison.json").read_text())["agent"]["epoch"] in (1, 2)
    assert (out / "temporal" / "train.log").read_text() == logs["temporal"]


def assert_mask_generator_as_initialized(folder: Path) -> None:
    """The run's mask generator holds exactly the weights its training started from."""
    from songweave.train.config import config_from_dict
    from songweave.train.setup import build_run

    cfg = config_from_dict(json.loads((folder / "config.json").read_text()))
    initial = build_run(cfg, 0, 1, torch.device("cpu")).model.state_dict()
    trained = torch.load(folder / "checkpoint_best.pth", weights_only=True)["model_state_dict"]
    agent_names = [name for name in initial if ".mask_generator." in name]
    assert agent_names
    for name in agent_names:
        assert torch.equal(trained[name], initial[name]), name
