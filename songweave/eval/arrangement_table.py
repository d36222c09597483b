"""The arrangement scorecard of several models on held-out pairs of whole songs, beside the
simplest arrangements of the same aligned sources: the headline table of compare-masks.

    pairs = held_out_song_pairs(dataset_folder, songs_dir, max_pairs=8)
    table = arrangement_table({"agent": trained, ...}, pairs)
    print(table_markdown(table))

Pairs are two different validation songs (a store's val songs, or the songs a pair folder's
val split was cut from: never seen in training), each song once as the input where possible.
From each pair an excerpt of EXCERPT_SECONDS from the middle of both songs is aligned once
(audio/alignment.py), then every model arranges it (inference.arrange, windows on beats) and
every reference is built from the same aligned sources; all are scored by eval/scorecard.py.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from songweave.audio.analysis import analyze_song
from songweave.audio.io import read_mono
from songweave.data.split_dataset import validation_song_names
from songweave.eval.reference_arrangements import reference_arrangements
from songweave.eval.scorecard import (
    FIGURE_COLUMNS,
    Scorecard,
    Thresholds,
    rejudge,
    score_arrangement,
    summarize,
)
from songweave.inference.arrange import arrange
from songweave.inference.load import TrainedModel, training_segment_seconds
from songweave.inference.sources import combined_sources
from songweave.runtime.formatting import fmt

log = logging.getLogger(__name__)

EXCERPT_SECONDS = 24.0
COLUMNS = (("pass_rate", "pass"), *FIGURE_COLUMNS)


@dataclass(frozen=True)
class SongPair:
    input: Path
    target: Path

    def describe(self) -> str:
        return f"{self.input.name} + {self.target.name}"


def validation_songs(dataset_folder: str | os.PathLike, songs_dir: str | os.PathLike) -> list[Path]:
    """The validation songs of the dataset, found under `songs_dir`, sorted."""
    songs_dir = Path(songs_dir)
    names = validation_song_names(dataset_folder)
    found = sorted(songs_dir / name for name in names if (songs_dir / name).is_file())
    missing = len(names) - len(found)
    if missing:
        log.warning("%d validation song(s) not found under %s", missing, songs_dir)
    return found


def held_out_song_pairs(
    dataset_folder: str | os.PathLike, songs_dir: str | os.PathLike, max_pairs: int = 8
) -> list[SongPair]:
    """(song i, song i + 1) over the sorted validation songs, cyclically, at most `max_pairs`."""
    songs = validation_songs(dataset_folder, songs_dir)
    if len(songs) < 2:
        raise ValueError(
            f"the arrangement table needs 2 validation songs under {songs_dir}, found {len(songs)}"
        )
    count = min(max_pairs, len(songs) if len(songs) > 2 else 1)
    return [SongPair(songs[i], songs[(i + 1) % len(songs)]) for i in range(count)]


def excerpt(audio: np.ndarray, sample_rate: int, seconds: float) -> np.ndarray:
    length = int(seconds * sample_rate)
    start = max(0, (len(audio) - length) // 2)
    return audio[start : start + length]


@dataclass
class PairArrangements:
    """One pair: its sources (the input, the target as it is and aligned), every arrangement,
    their scorecards and how the target was aligned."""

    sources: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    cards: dict[str, Scorecard]
    alignment: str
    sample_rate: int


def score_pair(
    models: dict[str, TrainedModel], pair: SongPair, seconds: float = EXCERPT_SECONDS
) -> PairArrangements:
    """Every model's and every reference's arrangement of one pair, with its scorecard."""
    codec = next(iter(models.values())).codec
    rate = int(codec.sample_rate)
    source = excerpt(read_mono(pair.input, rate), rate, seconds)
    raw_target = excerpt(read_mono(pair.target, rate), rate, seconds)
    sources = combined_sources(source, raw_target, rate, align=True)
    analyses = (analyze_song(sources.input, rate), analyze_song(sources.target, rate))
    outputs: dict[str, np.ndarray] = {}
    for name, trained in models.items():
        if int(trained.codec.sample_rate) != rate:
            raise ValueError(f"{name} runs at {trained.codec.sample_rate} Hz, the others at {rate}")
        segment = int(round(training_segment_seconds(trained.train_config) * rate))
        outputs[name], _, _ = arrange(
            trained.model,
            trained.codec,
            sources.input,
            sources.target,
            segment,
            progress=False,
            beat_samples=sources.beat_samples(rate),
        )
    outputs.update(reference_arrangements(sources.input, sources.target, raw_target, codec))
    cards = {
        name: score_arrangement(
            audio, sources.input, sources.target, rate, source_analyses=analyses
        )
        for name, audio in outputs.items()
    }
    return PairArrangements(
        sources={
            "input_song": sources.input,
            "target_song": raw_target,
            "target_aligned": sources.target,
        },
        outputs=outputs,
        cards=cards,
        alignment=sources.plan.describe() if sources.plan is not None else "not aligned",
        sample_rate=rate,
    )


def arrangement_table(
    models: dict[str, TrainedModel],
    pairs: list[SongPair],
    progress: bool = True,
    seconds: float = EXCERPT_SECONDS,
    listening_dir: Path | None = None,
) -> dict[str, Any]:
    """{"pairs": [...], "rows": {name: means and pass rate}, "cards": {pair: {name: card}}};
    with `listening_dir`, also every pair's audio there, its listening page (index.html) and
    "listening": {pair: {"files", "alignment", "seconds"}}."""
    from tqdm import tqdm

    from songweave.eval.arrangement_page import write_arrangement_page, write_pair_audio

    cards: dict[str, dict[str, Scorecard]] = {}
    listening: dict[str, dict[str, Any]] = {}
    for index, pair in enumerate(
        tqdm(pairs, desc="arrangement scorecard", unit="pair", disable=not progress)
    ):
        result = score_pair(models, pair, seconds)
        cards[pair.describe()] = result.cards
        if listening_dir is not None:
            files = write_pair_audio(
                listening_dir, index, result.sources, result.outputs, result.sample_rate
            )
            listening[pair.describe()] = {
                "files": files,
                "alignment": result.alignment,
                "seconds": len(result.sources["input_song"]) / result.sample_rate,
            }
    table: dict[str, Any] = {
        "pairs": list(cards),
        "excerpt_seconds": seconds,
        **_rows_and_cards(cards, Thresholds()),
    }
    if listening_dir is not None:
        table["listening"] = listening
        table["page"] = str(write_arrangement_page(listening_dir, table))
    return table


def _rows_and_cards(
    cards: dict[str, dict[str, Scorecard]], thresholds: Thresholds
) -> dict[str, Any]:
    names = list(next(iter(cards.values())))
    return {
        "thresholds": asdict(thresholds),
        "rows": {name: summarize([by_name[name] for by_name in cards.values()]) for name in names},
        "cards": {
            pair: {name: card.to_dict() for name, card in by_name.items()}
            for pair, by_name in cards.items()
        },
    }


def rejudge_table(table: dict[str, Any], thresholds: Thresholds = Thresholds()) -> dict[str, Any]:
    """The same measured figures of every card, passed or failed by `thresholds`, and the rows
    summarized again: for tables measured before the thresholds changed."""
    cards = {
        pair: {
            name: rejudge(Scorecard.from_dict(card), thresholds) for name, card in by_name.items()
        }
        for pair, by_name in table["cards"].items()
    }
    return {**table, **_rows_and_cards(cards, thresholds)}


def table_markdown(table: dict[str, Any]) -> list[str]:
    lines = [
        "| | " + " | ".join(title for _, title in COLUMNS) + " |",
        "|---|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for name, row in table["rows"].items():
        lines.append(f"| {name} | " + " | ".join(fmt(row.get(key)) for key, _ in COLUMNS) + " |")
    return lines
