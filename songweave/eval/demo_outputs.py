"""What `train_simple_ddp.py --demo` leaves after training: the evaluation report and its
listening page, and an arrangement of two validation songs."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from songweave.data.song_files import find_audio_files
from songweave.data.split_dataset import songs_folder, validation_song_names
from songweave.eval.demo_page import write_eval_demo
from songweave.eval.evaluate import evaluate, format_report
from songweave.inference.arrange import arrange_files
from songweave.inference.load import load_trained
from songweave.runtime.checkpoint import BEST_NAME, LAST_NAME
from songweave.runtime.formatting import json_safe

log = logging.getLogger(__name__)


def demo_songs(dataset_folder: str | os.PathLike) -> list[Path]:
    """Full songs to arrange after the demo: the validation songs first (data/split_dataset.py:
    a store's val songs, or those a pair folder's val pairs name, found where the dataset keeps
    its songs), then any other song there."""
    songs_dir = songs_folder(dataset_folder)
    if not songs_dir.is_dir():
        return []
    try:
        names = validation_song_names(dataset_folder)
    except (FileNotFoundError, ValueError) as error:
        log.info("no validation songs from the dataset (%s)", error)
        names = []
    preferred = [songs_dir / name for name in names if (songs_dir / name).is_file()]
    return preferred + [path for path in find_audio_files(songs_dir) if path not in preferred]


def demo_outputs(
    checkpoint_dir: str | os.PathLike, dataset_folder: str | os.PathLike, progress: bool = True
) -> dict[str, Any]:
    """What `train_simple_ddp.py --demo` shows at the end.

    Evaluates checkpoint_best.pth (else checkpoint_last.pth) on the validation split into
    CHECKPOINT_DIR/eval/ (report, figures and the listening page index.html) and arranges two
    validation songs into CHECKPOINT_DIR/arrangement.wav (+ arrangement_masks.png); prints the
    report table and the arrangement summary.
    Returns {"report": dict, "eval_dir": Path, "page": Path, "arrangement": ArrangeResult | None}.
    """
    folder = Path(checkpoint_dir)
    checkpoint = next(
        (folder / name for name in (BEST_NAME, LAST_NAME) if (folder / name).is_file()), None
    )
    if checkpoint is None:
        raise FileNotFoundError(f"no {BEST_NAME} or {LAST_NAME} in {folder}")
    eval_dir = folder / "eval"
    report = evaluate(checkpoint, dataset_folder, eval_dir, split="val", progress=progress)
    page = write_eval_demo(load_trained(checkpoint), dataset_folder, eval_dir, split="val")
    print(format_report(report))
    print(f"report and figures: {eval_dir}; listen: {page}")
    songs = demo_songs(dataset_folder)
    result = scorecard = None
    if songs:
        source, target = songs[0], songs[1] if len(songs) > 1 else songs[0]
        result = arrange_files(
            checkpoint, source, target, folder / "arrangement.wav", progress=progress
        )
        print(result.summary(source.name, target.name))
        scorecard = score_demo_arrangement(result.output, target)
    else:
        log.info("no songs in %s/songs_src: no demo arrangement", dataset_folder)
    return {
        "report": report,
        "eval_dir": eval_dir,
        "page": page,
        "arrangement": result,
        "scorecard": scorecard,
    }


def score_demo_arrangement(arrangement: Path, raw_target: Path) -> dict[str, Any] | None:
    """The arrangement scorecard of the demo's arrangement beside the references (printed and
    written to ARRANGEMENT_score.json); None when the songs are too short to score."""
    from songweave.eval.score import score_files, table

    try:
        cards = score_files(arrangement, raw_target=raw_target)
    except ValueError as error:
        log.info("no arrangement scorecard: %s", error)
        return None
    print(table(cards))
    scores = {name: card.to_dict() for name, card in cards.items()}
    path = arrangement.with_name(f"{arrangement.stem}_score.json")
    path.write_text(json.dumps(json_safe(scores), indent=2) + "\n")
    print(f"arrangement scorecard: {path}")
    return scores
