"""What the property-based tests share: the tiny model, the assertions every tool run must meet,
and helpers for folders and digests (the fixtures and hypothesis profiles are in conftest.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# The model of tests/unit/inference: 16 MDCT channels, one layer, two cascade stages.
TINY_MODEL = dict(
    encoding_dim=16, nhead=2, num_layers=1, dim_feedforward=32, num_transformer_layers=2
)
TINY_TRAIN_CONFIG = {"codec": "mdct", "codec_weights": "", "codec_option": {"dim": 16}}

# Prefix of the one-line error each tool prints today.
ERROR_PREFIX = {
    "train": "error: ",
    "prepare-pairs": "error: ",
    "demo-music": "error: ",
    "evaluate": "error: ",
    "compare-masks": "error: ",
    "arrange": "error: ",
    "score": "error: ",
    "export-model": "error: ",
    "bench": "error: ",
    "bench-arrange": "bench_arrange: ",
    "gpu-check": "gpu_check: ",
}
EXIT_CODES = {0, 1, 2, 130}
# Files a tool writes next to its output while working; none may be left behind.
PARTIAL_MARKERS = (".tmp", ".partial", ".probe-", ".old-", ".songs-")


# A line of the tools' logging set-up (runtime/cli.py setup_logging), not part of an error.
LOG_LINE = re.compile(
    r"^(\d\d:\d\d:\d\d \[rank \d+\] )?(DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: "
)


class Files(dict):
    """A dict of paths whose repr stays short in hypothesis' failure reports."""

    def __repr__(self) -> str:
        return f"<{len(self)} entries>"


class Reached(Exception):
    """Raised by a guard in place of a tool's long work: the flags were accepted."""


@dataclass
class ToolRun:
    code: int | None
    out: str
    err: str
    reached: bool = False


def run_main(main, argv: list[str], capsys) -> ToolRun:
    """main(argv) in-process: its exit status (argparse's SystemExit included) and output.
    Any other exception propagates: an uncaught exception is a bug of the tool."""
    capsys.readouterr()
    reached = False
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        code = main(list(argv))
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) or stop.code is None else 2
        code = 0 if code is None else code
    except Reached:
        code, reached = 0, True
    finally:
        # Tools set up logging on this test's captured stderr: undo it for the next example.
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
    captured = capsys.readouterr()
    return ToolRun(code, captured.out, captured.err, reached)


def assert_clean_exit(run: ToolRun, tool: str, argv: list[str], one_line: bool = True) -> None:
    """The documented exit statuses, no traceback, and an error of one `PREFIX ...` line
    (training prints one such line per invalid flag)."""
    shown = f"{tool} {' '.join(map(repr, argv))}"
    assert run.code in EXIT_CODES, f"{shown}: exit status {run.code!r}\n{run.err}"
    for text in (run.out, run.err):
        assert "Traceback" not in text, f"{shown}: traceback\n{text}"
    if run.code in (1, 2) and not run.reached:
        lines = [line for line in run.err.splitlines() if line.strip() and not LOG_LINE.match(line)]
        prefix = ERROR_PREFIX[tool]
        assert lines, f"{shown}: exit status {run.code} without a message"
        errors = [line for line in lines if line.startswith(prefix)]
        assert errors, f"{shown}: no {prefix!r} line in\n{run.err}"
        if one_line:
            assert len(errors) == 1 and len(lines) == 1, f"{shown}: not one line\n{run.err}"
        else:
            assert len(errors) == len(lines), f"{shown}: lines without {prefix!r}\n{run.err}"


def tree_digest(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under folder (inputs must stay as they were)."""
    folder = Path(folder)
    if folder.is_file():
        return Files({folder.name: hashlib.sha256(folder.read_bytes()).hexdigest()})
    return Files(
        {
            str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            # DATA/cache holds the latent cache, rebuilt by design from the pairs.
            if p.is_file() and "cache" not in p.relative_to(folder).parts
        }
    )


def leftovers(folder: Path) -> list[str]:
    """Temporary or half-written files a tool left under folder."""
    return sorted(
        str(p)
        for p in Path(folder).rglob("*")
        if any(marker in p.name for marker in PARTIAL_MARKERS)
    )


def assert_finite_numbers(values: dict, where: str) -> None:
    for key, value in values.items():
        if isinstance(value, dict):
            assert_finite_numbers(value, f"{where}.{key}")
        elif isinstance(value, float):
            assert math.isfinite(value), f"{where}: accepted {key}={value}"


def music(seconds: float, rate: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t)
    return (tone + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def fresh_folder(base: Path, prefix: str = "case") -> Path:
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=base))


def copy_tree(source: Path, base: Path) -> Path:
    target = fresh_folder(base, source.name)
    shutil.copytree(source, target, dirs_exist_ok=True)
    return target


def write_json(path: Path, value) -> Path:
    path.write_text(json.dumps(value))
    return path


def assert_unchanged(before: dict[str, str], folder: Path) -> None:
    """Inputs stay as they were: no file under folder added, removed or changed."""
    after = tree_digest(folder)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"inputs changed under {folder}: {changed[:5]}"
