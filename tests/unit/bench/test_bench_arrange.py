"""creative-bench-arrange: flags, and a run (tiny model) through arrange() and the creative-arrange
command."""

from __future__ import annotations

import json

import pytest
import torch

from songweave.bench import arrange as bench_arrange
from songweave.bench.arrange import ArrangeBenchConfig, UsageError
from songweave.runtime.precision import choose_precision


def test_defaults_and_flags():
    assert bench_arrange.parse_args([]) == ArrangeBenchConfig()
    config = bench_arrange.parse_args(
        ["--seconds", "30", "--precisions", "bf16", "--no_cli", "--threads", "1"]
    )
    assert config == ArrangeBenchConfig(seconds=30.0, precisions=("bf16",), cli=False, threads=1)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seconds", "2"], "--seconds must be >= 4.0"),
        (["--precisions", "fp16"], "invalid choice: 'fp16'"),
        (["--batch_size", "0"], "--batch_size must be >= 1"),
    ],
)
def test_bad_flags_are_one_line_errors(argv, message, capsys):
    with pytest.raises(UsageError, match=message):
        bench_arrange.parse_args(argv)
    assert bench_arrange.main(argv) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_default_model_is_benchs():
    config = bench_arrange.default_model_config()
    assert (
        config["num_transformer_layers"],
        config["num_layers"],
        config["dim_feedforward"],
        config["agent_hidden_dim"],
        config["use_creative_agent"],
    ) == (2, 4, 2048, 256, True)


def test_run_times_arrange_per_precision_and_the_command(monkeypatch, tmp_path, capsys):
    tiny = dict(
        encoding_dim=128,
        nhead=4,
        num_layers=1,
        num_transformer_layers=2,
        dropout=0.0,
        use_creative_agent=True,
        dim_feedforward=64,
        agent_hidden_dim=32,
    )
    monkeypatch.setattr(bench_arrange, "default_model_config", lambda: tiny)
    out = tmp_path / "speed.json"
    assert bench_arrange.main(["--seconds", "5", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    auto, fp32 = result["arrange"]
    assert auto["resolved"] == choose_precision("auto", torch.device("cpu")).precision
    assert fp32["resolved"] == "fp32"
    for timing in (auto, fp32):
        assert timing["song_s"] == pytest.approx(5.0)
        assert timing["real_time_factor"] == pytest.approx(5.0 / timing["arrange_s"])
    assert "real-time factor" in result["cli"]["printed"]
    assert "real-time factor" in capsys.readouterr().out
