"""What evaluation reads of a DATA folder, whichever layout it has, a song store (data/
store_windows.py: the store's fixed validation windows) or a folder of pairs (data/wav_pairs.py):
one split's pairs, the songs they name, the validation songs and where the songs are."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from songweave.data.song_store import SONGS_NAME, is_store, read_store_info


def open_split(
    folder: str | os.PathLike, codec: Any, split: str = "val", return_audio: bool = True
) -> Dataset:
    """The split's pairs with their latents (and reference audio with `return_audio`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--dataset_folder {folder} does not exist")
    if is_store(folder):
        from songweave.data.store_windows import StoreWindowsDataset

        return StoreWindowsDataset(folder, codec, split=split, return_audio=return_audio)
    from songweave.data.wav_pairs import WavPairsDataset

    return WavPairsDataset(folder, codec, split=split, return_audio=return_audio)


def pair_sources(
    folder: str | os.PathLike, split: str, dataset: Dataset, pairs: list[int]
) -> list[tuple[str, str]]:
    """(input song, target song) of each of `pairs` (pair numbers of the split); [] when the
    folder does not name them (a pair folder without a manifest)."""
    folder = Path(folder)
    if is_store(folder):
        from songweave.data.store_windows import song_sources

        sources = song_sources(folder)
        windows = [dataset.window(number) for number in pairs]
        return [(sources[w.input_song], sources[w.target_song]) for w in windows]
    from songweave.data.pair_manifest import read_manifest

    try:
        entries = read_manifest(folder, split, check_files=False)
    except (FileNotFoundError, ValueError):
        return []
    if len(entries) != len(dataset):
        return []
    return [(entries[number].input_source, entries[number].target_source) for number in pairs]


def validation_song_names(dataset_folder: str | os.PathLike) -> list[str]:
    """The validation songs' paths relative to their songs folder, each once: the store's val
    songs in song order, or the songs a pair folder's val pairs were cut from in manifest order.
    """
    if is_store(dataset_folder):
        lines = (Path(dataset_folder) / SONGS_NAME).read_text().splitlines()
        songs = [json.loads(line) for line in lines if line.strip()]
        return [song["source"] for song in songs if song["split"] == "val"]
    from songweave.data.pair_manifest import read_manifest

    names: dict[str, None] = {}
    for entry in read_manifest(dataset_folder, "val", check_files=False):
        for name in (entry.input_source, entry.target_source):
            if name:
                names[str(name)] = None
    return list(names)


def songs_folder(dataset_folder: str | os.PathLike) -> Path:
    """Where the dataset's whole songs are: the folder a store was built from, else
    DATA/songs_src (where the demo keeps its songs)."""
    from songweave.data.demo_music import SONGS_DIRNAME

    dataset_folder = Path(dataset_folder)
    if is_store(dataset_folder):
        recorded = read_store_info(dataset_folder).get("songs_folder")
        if recorded:
            return Path(recorded)
    return dataset_folder / SONGS_DIRNAME
