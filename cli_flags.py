"""One flag style for every command-line tool of the library.

- Booleans are `--flag true|false` (also 1/0, yes/no, on/off); a bare `--flag` means true.
- Help lines end in "; default: VALUE", except for required flags and flags without a default.
- Errors are one line, `error: ...`, with exit status 2.

Library use: `OneLineParser(description=...)`, `add_bool_flag(parser, "--progress", True, "...")`,
`add_device_flag(parser)`, `parse_bool(text)`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

EXIT_USAGE = 2
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


def add_device_flag(parser: argparse.ArgumentParser, default: str = "auto") -> argparse.Action:
    return parser.add_argument(
        "--device",
        default=default,
        choices=DEVICE_CHOICES,
        help="where the model runs: auto (cuda when available, else cpu), cpu or cuda",
    )
