"""Folders import downward only: the floors of docs/design.md, checked on every import (lazy
ones inside functions included) of the package and the card's modules."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

# Each unit and its floor; a unit may import itself and units on lower floors only.
FLOORS = {
    "songweave.audio": 1,
    "songweave.runtime": 0,
    "songweave.data": 2,
    "songweave.model": 2,
    "card.model": 3,  # creative_agent, model_simple_transformer
    "songweave.viz": 3,
    "songweave.train": 4,
    "card.worker": 5,  # train_simple_worker
    "songweave.inference": 6,
    "songweave.eval": 7,
    "songweave.bench": 8,
    "songweave.tools": 8,
    "card.launcher": 8,  # train_simple_ddp
    "songweave.commands": 9,
    "songweave.__main__": 10,
}
CARD_UNITS = {
    "creative_agent": "card.model",
    "model_simple_transformer": "card.model",
    "train_simple_worker": "card.worker",
    "train_simple_ddp": "card.launcher",
}


def unit_of(module: str) -> str | None:
    """The unit a dotted module name belongs to (None: not ours)."""
    top = module.split(".")[0]
    if top in CARD_UNITS:
        return CARD_UNITS[top]
    if top != "songweave":
        return None
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else "songweave"


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def our_modules() -> list[Path]:
    card = [ROOT / f"{name}.py" for name in CARD_UNITS]
    return card + sorted((ROOT / "songweave").rglob("*.py"))


def test_every_unit_has_a_floor():
    units = {unit_of(module_name(path)) for path in our_modules()}
    assert units - {"songweave"} <= set(FLOORS), units - set(FLOORS)


def test_folders_import_downward_only():
    upward = []
    for path in our_modules():
        own = unit_of(module_name(path))
        if own == "songweave":  # the package's docstring-only __init__
            continue
        for imported in imports_of(path):
            other = unit_of(imported)
            if other in (None, own, "songweave"):
                continue
            if FLOORS[other] >= FLOORS[own]:
                upward.append(f"{path.relative_to(ROOT)} ({own}) imports {imported} ({other})")
    assert not upward, "\n".join(sorted(upward))
