"""Judge a finished comparison's arrangement scorecards again by the scorecard's current
thresholds, without training or measuring anything again.

    python -m songweave.eval.rejudge runs/compare [more comparison folders]

Reads DIR/comparison.json (written by creative-compare-masks), recomputes every card's checks and
the pass rates from the figures it holds (eval/arrangement_table.rejudge_table), and rewrites
comparison.json, comparison.md and, where its audio is there, the listening page. The measured
figures are not touched: only the pass/fail of each pair and the rows' pass rates change.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from songweave.eval.arrangement_table import rejudge_table
from songweave.eval.comparison_report import agent_verdicts, comparison_markdown
from songweave.runtime.atomic_files import write_text_atomic
from songweave.runtime.cli import OneLineParser, setup_logging

NOT_VARIANTS = ("arrangement", "verdicts", "settings")


def rejudge_comparison(folder: str | os.PathLike) -> dict:
    """Rewrite FOLDER's comparison.json and comparison.md judged by the current thresholds;
    the comparison. ValueError when the folder holds no arrangement table."""
    folder = Path(folder)
    path = folder / "comparison.json"
    try:
        comparison = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable comparison ({error})") from None
    if not comparison.get("arrangement"):
        raise ValueError(f"{path} has no arrangement table to judge")
    arrangement = rejudge_table(comparison["arrangement"])
    comparison["arrangement"] = arrangement
    results = {k: v for k, v in comparison.items() if k not in NOT_VARIANTS}
    settings = comparison.get("settings") or {}
    markdown = comparison_markdown(
        results,
        comparison.get("verdicts") or agent_verdicts(results),
        Path(str(settings.get("dataset_folder", "?"))),
        int(settings.get("eval_batch_size", 0)),
        arrangement,
    )
    listening = folder / "listening"
    if arrangement.get("listening") and listening.is_dir():
        from songweave.eval.arrangement_page import write_arrangement_page

        write_arrangement_page(listening, arrangement)
    write_text_atomic(path, json.dumps(comparison, indent=2, allow_nan=False) + "\n")
    write_text_atomic(folder / "comparison.md", markdown)
    return comparison


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="folders written by creative-compare-masks")
    args = parser.parse_args(argv)
    setup_logging()
    for folder in args.folders:
        try:
            comparison = rejudge_comparison(folder)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        rows = comparison["arrangement"]["rows"]
        passes = ", ".join(f"{name} {row.get('pass_rate', 0):.3f}" for name, row in rows.items())
        print(f"{folder}: pass rates {passes}")
    return 0


if __name__ == "__main__":
    from songweave.runtime.cli import run_module

    run_module(main, "songweave.eval.rejudge")
