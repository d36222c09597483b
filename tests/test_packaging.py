"""pyproject.toml: every top-level module is installed, the licence is declared."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_top_level_module_is_listed() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = project["tool"]["setuptools"]["py-modules"]
    modules = sorted(path.stem for path in ROOT.glob("*.py"))
    assert sorted(listed) == modules, "add new modules to py-modules in pyproject.toml"
    assert project["project"]["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "The creative-agent authors" in (ROOT / "LICENSE").read_text()


def test_runtime_requirements_are_project_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = {
        dep.split(">")[0].split("=")[0].strip() for dep in project["project"]["dependencies"]
    }
    development_only = {"pytest", "selenium", "ruff"}
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    required = {
        line.split("=")[0].strip() for line in lines if line.strip() and not line.startswith("#")
    }
    assert required - development_only == declared
