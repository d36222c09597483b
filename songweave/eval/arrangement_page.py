"""The listening page of the arrangement table: LISTEN/index.html beside LISTEN/pair_K_*.wav.

Per pair of held-out songs: the two songs as they are, the target aligned to the input (what
every arrangement was made from), then every arrangement, the models' and the references', each
with a player and its scorecard. Self-contained like creative-evaluate's page (relative links,
no script), so the folder can be copied or served as it is.

    files = write_pair_audio(folder, 0, sources, outputs, sample_rate)
    write_arrangement_page(folder, table)   # table: arrangement_table.arrangement_table(...)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from songweave.eval.html_parts import audio_player, escape, html_table, number, write_page
from songweave.eval.scorecard import FIGURE_COLUMNS, thresholds_line

PAGE_NAME = "index.html"
SOURCE_TITLES = {
    "input_song": "input song (A)",
    "target_song": "target song (B), as it is",
    "target_aligned": "B aligned to A (every arrangement below starts from it)",
}
# A copy of one song is that song: its player is the source's.
COPY_OF = {"input_copy": "input_song", "target_copy": "target_aligned"}


def write_pair_audio(
    folder: Path,
    index: int,
    sources: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray],
    sample_rate: int,
) -> dict[str, str]:
    """pair_K_<name>.wav for every source and arrangement; name -> file name in `folder`."""
    from songweave.audio.io import write_audio

    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    for name, audio in {**sources, **outputs}.items():
        if name in COPY_OF:
            continue
        files[name] = f"pair_{index}_{name}.wav"
        write_audio(folder / files[name], audio, sample_rate)
    for name, source in COPY_OF.items():
        if name in outputs and source in files:
            files[name] = files[source]
    return files


def _verdict(card: dict[str, Any]) -> str:
    if card.get("passed"):
        return "<span class='yes'>pass</span>"
    failed = ", ".join(card.get("failed") or [])
    return f"<span class='no'>fail</span><div class='songs'>{escape(failed)}</div>"


def _pair_section(index: int, label: str, cards: dict[str, Any], listening: dict) -> list[str]:
    files, seconds = listening["files"], listening.get("seconds")
    sources = html_table(
        [SOURCE_TITLES[name] for name in SOURCE_TITLES if name in files],
        [[audio_player(files[name], seconds) for name in SOURCE_TITLES if name in files]],
        numeric_from=99,
    )
    header = ["arrangement", "listen", "verdict", *(title for _, title in FIGURE_COLUMNS)]
    rows = [
        [
            escape(name),
            audio_player(files[name], seconds) if name in files else "",
            _verdict(card),
            *(
                escape("yes" if card.get(key) else "no")
                if key == "key_compatible"
                else number(card.get(key))
                for key, _ in FIGURE_COLUMNS
            ),
        ]
        for name, card in cards.items()
    ]
    return [
        f"<h2>Pair {index}: {escape(label)}</h2>",
        f"<p class='note'>Alignment: {escape(listening.get('alignment') or 'none')}</p>",
        sources,
        html_table(header, rows, numeric_from=3),
    ]


def write_arrangement_page(folder: Path, table: dict[str, Any]) -> Path:
    """folder/index.html from an arrangement table that holds "listening" (its audio files)."""
    listening = table.get("listening") or {}
    body = [
        "<h1>Arrangements of held-out song pairs</h1>",
        (
            f"<p class='meta'>{len(table['pairs'])} pairs of validation songs, excerpts of "
            f"{number(table.get('excerpt_seconds'), 0)} s from the middle of each song. Shares: "
            "each song's part of the output's mel magnitudes; explained: how much of the output "
            "the two account for; fid: fidelity of the parts each song leads; beats: tracking "
            "confidence; key ok: the output's key is compatible with the input's.</p>"
        ),
        f"<p class='meta'>{escape(thresholds_line(table.get('thresholds')))}.</p>",
    ]
    for index, label in enumerate(table["pairs"]):
        if label in listening:
            body += _pair_section(index, label, table["cards"][label], listening[label])
    body.append("<p class='note'>Written by creative-compare-masks (arrangement table).</p>")
    return write_page(folder / PAGE_NAME, "Arrangements of held-out song pairs", body)
