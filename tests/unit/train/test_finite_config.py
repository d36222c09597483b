"""Every number a run is configured with is finite and every option has its field's type: flags
of every tool, --config files, KEY=VALUE options and configs built in code."""

from __future__ import annotations

import importlib
import json

import pytest

from songweave.runtime.formatting import loads_finite
from songweave.train.config import ConfigFileError, TrainConfig, parse_config, validate_config

NON_FINITE = ("inf", "-inf", "nan", "Infinity", "1e999")


@pytest.mark.parametrize("text", NON_FINITE)
@pytest.mark.parametrize("flag", ["--lr", "--dist_timeout", "--grad_clip", "--dropout"])
def test_train_float_flags_refuse_non_finite_values(flag, text, capsys):
    with pytest.raises(SystemExit) as stop:
        parse_config([f"{flag}={text}"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: argument") and "finite number" in err and "\n" not in err


@pytest.mark.parametrize(
    "module, argv",
    [
        ("songweave.inference.arrange", ["--overlap", "nan"]),
        ("songweave.inference.arrange", ["--segment_seconds", "inf"]),
        ("songweave.data.prepare_cli", ["--segment_seconds", "inf"]),
        ("songweave.data.prepare_cli", ["--min_rms", "nan"]),
        ("songweave.data.demo_music", ["--seconds", "inf"]),
        ("songweave.bench.main", ["--dropout", "nan"]),
    ],
)
def test_every_tool_refuses_non_finite_float_flags(module, argv, capsys):
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "finite number" in err and "\n" not in err and "Traceback" not in err


def test_config_files_with_non_finite_constants_are_refused(tmp_path):
    for text in ('{"lr": Infinity}', '{"lr": NaN}', '{"dist_timeout": -Infinity}', '{"lr": 1e999}'):
        path = tmp_path / "config.json"
        path.write_text(text)
        with pytest.raises(ConfigFileError, match=r"^--config .*config.json: not a JSON config"):
            parse_config(["--config", str(path)])


def test_key_value_options_refuse_non_finite_json(capsys):
    with pytest.raises(SystemExit):
        parse_config(["--model_option", "agent_temperature=NaN"])
    assert "non-finite number NaN" in capsys.readouterr().err


def test_configs_built_in_code_are_checked_for_finiteness_first():
    errors = validate_config(TrainConfig(demo=True, lr=float("inf")), cuda_device_count=0)
    assert errors == ["--lr must be a finite number, got inf"]
    errors = validate_config(TrainConfig(demo=True, dist_timeout=float("nan")), cuda_device_count=0)
    assert errors == ["--dist_timeout must be a finite number, got nan"]


@pytest.mark.parametrize(
    "option, message",
    [
        ("dim=sixteen", "mdct codec option dim must be int, got 'sixteen'"),
        ("dim=16.7", "mdct codec option dim must be int, got 16.7"),
        ("scale=-1", "mdct codec option scale must be > 0, got -1.0"),
        ("hop=3", "unknown mdct codec option 'hop'"),
    ],
)
def test_codec_options_are_checked_against_their_dataclass(option, message):
    cfg = parse_config(["--demo", "--codec_option", option])
    errors = validate_config(cfg, cuda_device_count=0)
    assert any(message in error for error in errors), errors


def test_strict_json_reading():
    assert loads_finite('{"a": 1.5, "b": [1, 2]}') == {"a": 1.5, "b": [1, 2]}
    for text in ("NaN", "[Infinity]", '{"x": -Infinity}', "1e400"):
        with pytest.raises(ValueError):
            loads_finite(text)
    assert json.loads("NaN") != json.loads("NaN")  # what the plain reader would have let in
