"""pyproject.toml: the card's four modules and the songweave package are installed, every tool
is a console command, the licence is declared."""

from __future__ import annotations

import tomllib
from helpers import ROOT

CARD_MODULES = [
    "creative_agent",
    "model_simple_transformer",
    "train_simple_ddp",
    "train_simple_worker",
]


def test_the_root_holds_only_the_card_modules() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = project["tool"]["setuptools"]["py-modules"]
    modules = sorted(path.stem for path in ROOT.glob("*.py"))
    assert modules == CARD_MODULES, "library modules belong in the songweave package"
    assert sorted(listed) == CARD_MODULES
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == [
        "songweave",
        "songweave.*",
    ]
    assert project["project"]["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "The creative-agent authors" in (ROOT / "LICENSE").read_text()


def test_runtime_requirements_are_project_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = {
        dep.split(">")[0].split("=")[0].strip() for dep in project["project"]["dependencies"]
    }
    development_only = {"pytest", "selenium", "ruff", "hypothesis"}
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    required = {
        line.split("=")[0].strip()
        for line in lines
        if line.strip() and not line.startswith(("#", "-e "))
    }
    assert required - development_only == declared
    assert "-e ." in lines  # the library itself, so the console commands exist


def test_every_tool_is_a_console_command() -> None:
    from songweave.commands import TOOLS

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    scripts = project["project"]["scripts"]
    assert scripts == {
        f"creative-{name}": f"songweave.commands:{name.replace('-', '_')}" for name in TOOLS
    }
