"""creative-compare-masks: comparison.json schema, the untrained agent, resuming an interrupted
comparison, bad flags, verdicts at comparable band balance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_train_ddp import make_tiny_dataset

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


def tiny_data(root: Path) -> Path:
    data = make_tiny_dataset(root / "data", train_pairs=4, val_pairs=3)
    # A prepare_pairs folder has a manifest; --demo would synthesize songs into DATA without one.
    lines = [
        {
            "split": split,
            "input_file": f"{split}/pair_{i:05d}_input.wav",
            "output_file": f"{split}/pair_{i:05d}_output.wav",
        }
        for split, count in (("train", 4), ("val", 3))
        for i in range(count)
    ]
    (data / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return data


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
        "verdicts",
        "settings",
    }
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


def test_untrained_agent_holds_every_epoch_whatever_the_shared_flags(tmp_path):
    data = tiny_data(tmp_path)
    options = compare_masks.parse_options(
        [
            "--dataset_folder",
            str(data),
            "--out",
            str(tmp_path / "out"),
            "--epochs",
            "3",
            "--",
            "--agent_hold_epochs",
            "1",
        ]
    )
    configs = compare_masks.resolve_training_configs(options)
    assert configs["untrained_agent"].agent_hold_epochs == 3
    assert configs["agent"].agent_hold_epochs == 1
    assert configs["untrained_agent"].use_creative_agent


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--variants", "agent,foo"], "--variants"),
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--epochs", "two"], "invalid int value"),
        (["--", "--checkpoint_dir", "x"], "set by compare_masks itself"),
        (["--", "--mask_type=energy"], "set by compare_masks itself"),
        (["--", "--nhead", "0"], "--nhead must be >= 1"),
        (["--", "--no_such_flag"], "unrecognized arguments"),
    ],
)
def test_bad_flags_are_one_line(tmp_path, capsys, flags, message):
    data, out = tiny_data(tmp_path), tmp_path / "compare"
    code = compare_masks.main(["--dataset_folder", str(data), "--out", str(out), *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not out.exists()


def test_dataset_without_pairs_is_refused(tmp_path, capsys):
    (tmp_path / "songs").mkdir()
    code = compare_masks.main(
        ["--dataset_folder", str(tmp_path / "songs"), "--out", str(tmp_path / "out")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "creative-prepare-pairs" in err[0]


def _result(balance: float, mr_stft: float, variant: str = "x") -> dict:
    return {
        "band_balance": balance,
        "mr_stft": mr_stft,
        "si_sdr_db": 0.0,
        "comparable": variant != "none" and compare_masks.comparable(balance),
    }


def test_verdicts_need_comparable_band_balance():
    results = {
        "agent": _result(0.5, 1.0),
        "temporal": _result(0.6, 2.0),
        "band_energy": _result(0.49, 0.9),
        "none": _result(0.5, 0.1, "none"),
    }
    verdicts = compare_masks.agent_verdicts(results)
    assert verdicts["agent_beats_temporal_mr_stft"]["beats"] is None
    assert "temporal band balance 0.6000" in verdicts["agent_beats_temporal_mr_stft"]["reason"]
    assert verdicts["agent_beats_band_energy_mr_stft"]["beats"] is False
    results["band_energy"] = _result(0.55, 1.1)
    assert compare_masks.agent_verdicts(results)["agent_beats_band_energy_mr_stft"]["beats"]
    results["agent"] = _result(0.44, 0.5)
    assert all(v["beats"] is None for v in compare_masks.agent_verdicts(results).values())
    # `none` has the lowest distance here, yet no verdict compares the agent with it.
    assert not any("none" in key for key in verdicts)
