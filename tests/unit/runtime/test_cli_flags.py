"""One flag style across creative-evaluate, creative-arrange, creative-prepare-pairs and
creative-export-model."""

from __future__ import annotations

import argparse

import pytest

from songweave.data import prepare_cli
from songweave.eval import compare_masks, evaluate, score
from songweave.inference import arrange
from songweave.inference import export as export_model
from songweave.runtime.cli import FALSE_WORDS, TRUE_WORDS, parse_bool
from songweave.train import config as train_config

PARSERS = {
    "evaluate": evaluate.build_parser,
    "arrange": arrange.build_parser,
    "prepare_pairs": prepare_cli.build_parser,
    "export_model": export_model.build_parser,
    "compare_masks": compare_masks.build_parser,
    "score": score.build_parser,
}
REQUIRED = {
    "evaluate": ["--checkpoint", "c.pth", "--dataset_folder", "d"],
    "arrange": ["--checkpoint", "c.pth", "--input", "a", "--target", "b", "--output", "o.wav"],
    "prepare_pairs": ["--songs", "s", "--out", "o"],
    "export_model": ["--checkpoint", "c.pth", "--out", "o"],
    "compare_masks": ["--dataset_folder", "d", "--out", "o"],
    "score": ["--arrangement", "o.wav"],
}
BOOL_FLAGS = {
    "evaluate": ["--progress"],
    "arrange": ["--align", "--progress"],
    "score": ["--references"],
    "prepare_pairs": ["--progress", "--align", "--overwrite"],
    "export_model": ["--overwrite"],
    "compare_masks": ["--progress", "--overwrite"],
}


def flags(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        action
        for action in parser._actions
        if action.option_strings and not isinstance(action, argparse._HelpAction)
    ]


@pytest.mark.parametrize("tool", PARSERS)
def test_booleans_are_true_false_flags(tool):
    parser = PARSERS[tool]()
    for action in flags(parser):
        assert not isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)), (
            f"{tool} {action.option_strings}: use add_bool_flag"
        )
    bools = sorted(a.option_strings[0] for a in flags(parser) if a.type is parse_bool)
    assert bools == sorted(BOOL_FLAGS[tool])
    for flag in BOOL_FLAGS[tool]:
        dest = flag.lstrip("-")
        assert getattr(parser.parse_args(REQUIRED[tool] + [flag, "false"]), dest) is False
        assert getattr(parser.parse_args(REQUIRED[tool] + [flag, "YES"]), dest) is True
        assert getattr(parser.parse_args(REQUIRED[tool] + [flag]), dest) is True  # bare = true


@pytest.mark.parametrize("tool", PARSERS)
def test_help_shows_defaults_but_not_for_required_flags(tool):
    parser = PARSERS[tool]()
    text = parser.format_help()
    assert "default: None" not in text and "(default: None)" not in text
    for action in flags(parser):
        help_text = parser.formatter_class(tool)._get_help_string(action) or ""
        assert help_text.strip(), f"{tool} {action.option_strings}: no help"
        if action.required:
            assert "default" not in help_text, action.option_strings
    for flag in BOOL_FLAGS[tool]:
        assert f"{flag} [BOOL]" in text
    if any("--device" in a.option_strings for a in flags(parser)):
        assert "cuda when available" in text


@pytest.mark.parametrize("tool", PARSERS)
def test_bad_values_are_one_line_errors(tool, capsys):
    flag = BOOL_FLAGS[tool][0]
    with pytest.raises(SystemExit) as stop:
        PARSERS[tool]().parse_args(REQUIRED[tool] + [flag, "maybe"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: ")
    assert "expected true/false" in lines[0]
    with pytest.raises(SystemExit) as stop:
        PARSERS[tool]().parse_args([])  # required flags missing: named, one line
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1 and "required" in lines[0]


def test_removed_flags_are_refused(capsys):
    with pytest.raises(SystemExit):
        evaluate.build_parser().parse_args(REQUIRED["evaluate"] + ["--no_progress"])
    assert "unrecognized arguments: --no_progress" in capsys.readouterr().err


def test_parse_bool_matches_training():
    for word in sorted(TRUE_WORDS | FALSE_WORDS):
        for text in (word, word.upper()):
            assert parse_bool(text) is (word in TRUE_WORDS)
    # Training parses its booleans with the very same function.
    assert train_config.parse_bool is parse_bool
    with pytest.raises(argparse.ArgumentTypeError):
        parse_bool("2")


def test_ctrl_c_in_a_tool_is_one_line_and_exit_130(monkeypatch, capsys):
    import songweave.commands as commands
    from songweave.data import prepare_cli

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_cli, "main", interrupted)
    assert commands.run("prepare-pairs", ["--songs", "x"]) == 130
    err = capsys.readouterr().err.strip()
    assert err == "creative-prepare-pairs: interrupted (Ctrl-C)"
