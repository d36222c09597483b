"""`pip install .` puts only the card's four modules and the songweave package at the top of
site-packages, and every tool becomes a working console command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

from songweave.commands import TOOLS

pytestmark = pytest.mark.slow

CARD_MODULES = {
    "creative_agent",
    "model_simple_transformer",
    "train_simple_ddp",
    "train_simple_worker",
}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return target


def run_installed(target: Path, *command: str) -> subprocess.CompletedProcess:
    # Outside the checkout, with only the installed copy on the path.
    env = {**os.environ, "PYTHONPATH": str(target)}
    return subprocess.run(
        list(command), cwd=target.parent, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_top_level_holds_only_the_card_modules_and_the_package(installed):
    top = {p.name.removesuffix(".py") for p in installed.iterdir()}
    top = {name for name in top if not name.endswith(".dist-info")} - {"bin", "__pycache__"}
    assert top == CARD_MODULES | {"songweave"}
    done = run_installed(installed, sys.executable, "-c", "import distributed")
    assert done.returncode != 0 and "No module named 'distributed'" in done.stderr


def test_every_tool_runs_as_a_console_command_and_as_a_module(installed):
    for name in TOOLS:
        command = installed / "bin" / f"creative-{name}"
        done = run_installed(installed, str(command), "--help")
        assert done.returncode == 0 and "usage: " in done.stdout, (name, done.stderr[-500:])
    done = run_installed(installed, sys.executable, "-m", "songweave", "arrange", "--help")
    assert done.returncode == 0 and done.stdout.startswith("usage: creative-arrange")
    done = run_installed(installed, sys.executable, "-m", "songweave", "no-such-tool")
    assert done.returncode == 2 and done.stderr.startswith("error: unknown tool")


def test_the_installed_package_holds_every_module_of_the_checkout(installed):
    """A folder without __init__.py (or one a .gitignore pattern hides) is left out of a
    wheel silently; the tools would then fail only once installed."""
    ours = {p.relative_to(ROOT).as_posix() for p in (ROOT / "songweave").rglob("*.py")}
    shipped = {p.relative_to(installed).as_posix() for p in (installed / "songweave").rglob("*.py")}
    assert ours == shipped, sorted(ours ^ shipped)
    folders = {p.parent for p in (ROOT / "songweave").rglob("*.py")}
    assert all((folder / "__init__.py").is_file() for folder in folders)
