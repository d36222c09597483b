"""Which files under a folder are songs, and which split each song belongs to: shared by both
data layouts (pair folders, data/prepare_pairs.py; song stores, data/store_build.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

# libsndfile format name -> file extensions it is found under. Intersected with
# soundfile.available_formats() so an mp3-less libsndfile simply does not look for mp3.
# RAW (header-less) is left out on purpose: it cannot be decoded without being told the layout.
_FORMAT_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "WAV": ("wav", "wave"),
    "WAVEX": ("wav",),
    "RF64": ("rf64",),
    "W64": ("w64",),
    "FLAC": ("flac",),
    "OGG": ("ogg", "oga", "opus"),
    "MP3": ("mp3",),
    "AIFF": ("aiff", "aif", "aifc"),
    "CAF": ("caf",),
    "AU": ("au", "snd"),
    "IRCAM": ("sf", "ircam"),
    "VOC": ("voc",),
    "SVX": ("iff", "svx"),
    "NIST": ("nist", "sph"),
    "PAF": ("paf",),
    "AVR": ("avr",),
    "SD2": ("sd2",),
    "XI": ("xi",),
    "MPC2K": ("mpc2k",),
    "HTK": ("htk",),
    "WVE": ("wve",),
}


def audio_extensions() -> set[str]:
    """Lower-case file extensions (no dot) of the formats this libsndfile can decode."""
    available = sf.available_formats()
    return {ext for fmt, exts in _FORMAT_EXTENSIONS.items() if fmt in available for ext in exts}


def find_audio_files(songs_dir: Path, exclude: tuple[Path, ...] = ()) -> list[Path]:
    """Audio files under songs_dir in sorted order, skipping hidden names and `exclude` trees."""
    extensions = audio_extensions()
    excluded = [p.resolve() for p in exclude]
    found = []
    for root, dirs, files in os.walk(songs_dir):
        root_path = Path(root)
        # Prune in place so os.walk never descends into hidden or excluded folders.
        dirs[:] = [
            d for d in dirs if not d.startswith(".") and (root_path / d).resolve() not in excluded
        ]
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower().lstrip(".") in extensions:
                found.append(root_path / name)
    return sorted(found, key=lambda p: p.relative_to(songs_dir).as_posix())


def assign_splits(
    sources: list[str], val_fraction: float, seed: int, min_songs_per_split: int = 1
) -> dict[str, str]:
    """Deterministic song -> split map: a seeded permutation of the sorted song list.

    With val_fraction > 0, each split gets at least min_songs_per_split songs when there are
    enough (cross-song pairs need two), else at least one.
    """
    ordered = sorted(sources)
    n = len(ordered)
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and n >= 2:
        least = min_songs_per_split if n >= 2 * min_songs_per_split else 1
        n_val = min(max(n_val, least), n - least)
    else:
        n_val = 0
    order = np.random.default_rng(seed).permutation(n)
    val = {ordered[i] for i in order[:n_val]}
    return {s: ("val" if s in val else "train") for s in ordered}
