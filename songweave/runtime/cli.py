"""One flag style for every command-line tool of the library.

- Booleans are `--flag true|false` (also 1/0, yes/no, on/off); a bare `--flag` means true.
- Help lines end in "; default: VALUE", except for required flags and flags without a default.
- Errors are one line, `error: ...`, with exit status 2.
- Numbers are finite: every float flag refuses nan, inf and values that overflow to inf.
- Ctrl-C ends a tool run through `run_tool` (every console command) with one line and exit
  status 130, after the tool's own clean-up (`finally` blocks) has run.

Library use: `OneLineParser(description=...)`, `add_bool_flag(parser, "--progress", True, "...")`,
`add_device_flag(parser)`, `parse_bool(text)`.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

# Exit statuses of every tool: done, failed (a one-line error), bad flags, stopped by a signal.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
# The folder that holds the songweave package and the card's modules (the repository root, or
# site-packages once installed): subprocesses of one tool find the others through it.
CODE_ROOT = Path(__file__).resolve().parents[2]
DEVICE_CHOICES = ("auto", "cpu", "cuda")
TRUE_WORDS = frozenset({"true", "1", "yes", "y", "on", "t"})
FALSE_WORDS = frozenset({"false", "0", "no", "n", "off", "f"})


def parse_bool(text: str | bool) -> bool:
    """'true'/'false' (1/0, yes/no, on/off, t/f, any case) -> bool; argparse error otherwise."""
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false (or 1/0, yes/no), got {text!r}")


def run_tool(main: Callable[[list[str]], int], argv: list[str], name: str) -> int:
    """`main(argv)`'s exit status; Ctrl-C (KeyboardInterrupt) becomes one line and
    EXIT_INTERRUPTED instead of a traceback."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        print(f"{name}: interrupted (Ctrl-C)", file=sys.stderr)
        return EXIT_INTERRUPTED


def run_module(main: Callable[[list[str]], int], module: str) -> NoReturn:
    """`python -m MODULE`: the process's arguments to `main`, with run_tool's Ctrl-C line."""
    sys.exit(run_tool(main, sys.argv[1:], f"python -m {module}"))


def finite_float(text: str) -> float:
    """A float flag's value: any finite number; nan, inf and overflows are argparse errors."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def show_default(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value == "" or value == {}:
        return "none"
    return str(value)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends "; default: VALUE" to optional flags that have a default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            action.required
            or action.default is None
            or action.default is argparse.SUPPRESS
            or not action.option_strings
            or isinstance(action, argparse._HelpAction)
            or "default:" in text
        ):
            return text
        return f"{text}; default: {show_default(action.default)}"


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (`error: ...`) with exit status 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        # One place makes every float flag of every tool finite.
        if kwargs.get("type") is float:
            kwargs["type"] = finite_float
        return super().add_argument(*args, **kwargs)

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def add_bool_flag(
    parser: argparse.ArgumentParser, flag: str, default: bool, help: str, dest: str | None = None
) -> argparse.Action:
    """`--flag BOOL` with true/false values; a bare `--flag` means true."""
    kwargs: dict[str, Any] = {"dest": dest} if dest else {}
    return parser.add_argument(
        flag,
        type=parse_bool,
        nargs="?",
        const=True,
        default=default,
        metavar="BOOL",
        help=help,
        **kwargs,
    )


def explicit_flags(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """The destinations of the flags `argv` gives (whatever their value), to refuse flags that
    do not apply to the mode chosen."""
    import copy

    probe = copy.deepcopy(parser)
    for action in probe._actions:
        action.default = argparse.SUPPRESS
    return set(vars(probe.parse_args(argv)))


def add_device_flag(parser: argparse.ArgumentParser, default: str = "auto") -> argparse.Action:
    return parser.add_argument(
        "--device",
        default=default,
        choices=DEVICE_CHOICES,
        help="where the model runs: auto (cuda when available, else cpu), cpu or cuda",
    )


def module_command(module: str, *args: str) -> list[str]:
    """The command that runs `python -m module args` with this interpreter (a tool of the library
    or a card module such as train_simple_ddp); run it with `module_env()`."""
    return [sys.executable, "-m", module, *args]


def module_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """environ (default: this process's) with CODE_ROOT first on PYTHONPATH, so `module_command`
    works from any working directory, installed or from a checkout."""
    env = dict(os.environ if environ is None else environ)
    paths = [str(CODE_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def setup_logging(rank: int | None = None, level: int = logging.INFO) -> None:
    """The one logging set-up of every tool: `level` and up to stderr as
    "LEVEL module: message", unless logging is already set up. In training (rank given) it is
    set anew: rank 0 logs at `level` and the others only warnings and errors, each line with its
    time and rank."""
    if rank is None:
        # A library caller's (or a test runner's) own logging set-up stays as it is.
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
        return
    level = level if rank == 0 else max(level, logging.WARNING)
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        force=True,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
