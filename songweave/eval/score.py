"""Score an arrangement against the two songs it combines, beside the simplest arrangements.

    creative-score --arrangement out.wav            # reads out_input.wav and out_target.wav
    creative-score --arrangement out.wav --raw_target b.flac --json score.json

`creative-arrange` writes the two sources exactly as it combined them (after alignment) beside
its output; this tool reads all three, computes the arrangement scorecard (eval/scorecard.py)
of the output and of every reference arrangement of the same sources (eval/
reference_arrangements.py: copies, sums, a temporal switch, the louder-band rule), and prints
one table. `--raw_target` (the target file as given to arrange) adds the unaligned sum.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from songweave.audio.analysis import analyze_song
from songweave.audio.codecs import get_codec
from songweave.audio.io import AudioFileError, read_mono
from songweave.eval.reference_arrangements import reference_arrangements
from songweave.eval.scorecard import FIGURE_COLUMNS, Scorecard, Thresholds, score_arrangement
from songweave.inference.sources import stem_paths
from songweave.runtime.cli import EXIT_OK, EXIT_USAGE, OneLineParser, add_bool_flag, setup_logging
from songweave.runtime.formatting import fmt, json_safe

log = logging.getLogger(__name__)

# The default codec's rate: the scorecard reads every file at it.
SCORE_RATE = 24_000
COLUMNS = (*FIGURE_COLUMNS, ("passed", "pass"))


def score_files(
    arrangement: Path,
    input_path: Path | None = None,
    target_path: Path | None = None,
    raw_target: Path | None = None,
    references: bool = True,
) -> dict[str, Scorecard]:
    """name -> scorecard: "arrangement" first, then the references of the same sources."""
    default_input, default_target = stem_paths(arrangement)
    output = read_mono(arrangement, SCORE_RATE)
    source = read_mono(input_path or default_input, SCORE_RATE)
    target = read_mono(target_path or default_target, SCORE_RATE)
    length = min(len(output), len(source), len(target))
    output, source, target = output[:length], source[:length], target[:length]
    analyses = (analyze_song(source, SCORE_RATE), analyze_song(target, SCORE_RATE))
    cards = {
        "arrangement": score_arrangement(output, source, target, SCORE_RATE, Thresholds(), analyses)
    }
    if references:
        raw = read_mono(raw_target, SCORE_RATE) if raw_target else target
        for name, audio in reference_arrangements(source, target, raw, get_codec()).items():
            if name == "sum_unaligned" and raw_target is None:
                continue
            cards[name] = score_arrangement(
                audio, source, target, SCORE_RATE, Thresholds(), analyses
            )
    return cards


def table(cards: dict[str, Scorecard]) -> str:
    width = max(len(name) for name in cards)
    header = f"{'':<{width}}  " + "  ".join(f"{title:>12}" for _, title in COLUMNS)
    rows = [header]
    for name, card in cards.items():
        values = card.to_dict()
        rows.append(
            f"{name:<{width}}  " + "  ".join(f"{fmt(values[key]):>12}" for key, _ in COLUMNS)
        )
        if card.failed:
            rows.append(f"{'':<{width}}  failed: {', '.join(card.failed)}")
    return "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arrangement", required=True, help="the arrangement to score (path)")
    parser.add_argument("--input", default=None, help="the input as combined; default OUT_input")
    parser.add_argument("--target", default=None, help="the target as combined; default OUT_target")
    parser.add_argument(
        "--raw_target",
        default=None,
        help="the target file as given to arrange (adds the unaligned sum to the references)",
    )
    add_bool_flag(parser, "--references", True, "also score the reference arrangements")
    parser.add_argument("--json", default=None, help="also write the scorecards here (path)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    try:
        cards = score_files(
            Path(args.arrangement),
            Path(args.input) if args.input else None,
            Path(args.target) if args.target else None,
            Path(args.raw_target) if args.raw_target else None,
            args.references,
        )
    except (AudioFileError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(table(cards))
    if args.json:
        report = {
            "thresholds": dataclasses.asdict(Thresholds()),
            "scorecards": {name: card.to_dict() for name, card in cards.items()},
        }
        Path(args.json).write_text(json.dumps(json_safe(report), indent=2) + "\n")
    return EXIT_OK


if __name__ == "__main__":
    from songweave.runtime.cli import run_module

    run_module(main, "songweave.eval.score")
