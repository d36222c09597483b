"""The song store: every song's codec latents once, back to back in float16 shards of about 1 GB.

Layout (written by songweave/data/store_build.py, read here):

    DATA/store.json               format, codec identity, rate, window seconds, pairing, splits,
                                  the shards with their sizes and sha256
    DATA/songs.jsonl              one JSON object per song: id, source, seconds, split, rate,
                                  checksum of the source file, tempo, key (and beats) when analysed
    DATA/latents/index.npy        one fixed-size record per song (INDEX_DTYPE): what a reader
                                  needs in memory, 43 bytes a song
    DATA/latents/beats.npy        every song's beat frames (int32), back to back
    DATA/latents/shard_NNNNN.f16  latent frames [frames, dim] float16, songs back to back
    DATA/listening/               the first validation windows as 16-bit WAVs (pair_NN_input.wav,
                                  pair_NN_target.wav) and pairs.jsonl naming their songs, to hear
                                  what trains (data/store_windows.write_listening_set)

Opening reads the two small .npy files and the JSON header: no per-song stat, no scan of the
shards. A shard's sha256 is checked the first time a process reads from it (``verify``), so a
damaged shard fails with one line naming it instead of feeding garbage to training.

float16 keeps 11 bits of mantissa: about 66 dB of signal-to-quantization ratio per coefficient,
far below what the MDCT codec's round trip or a model's error resolves; values beyond float16's
range are refused at build.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from songweave.runtime.hashing import sha256_file

STORE_FORMAT = "songweave-song-store"
STORE_VERSION = 2
STORE_NAME = "store.json"
SONGS_NAME = "songs.jsonl"
LATENTS_DIRNAME = "latents"
INDEX_NAME = "index.npy"
BEATS_NAME = "beats.npy"
SPLIT_CODES = {"train": 0, "val": 1}
MODE_CODES = {"major": 0, "minor": 1}
NO_KEY = -1

INDEX_DTYPE = np.dtype(
    [
        ("shard", "<u4"),
        ("offset", "<u8"),  # first frame of the song in its shard
        ("frames", "<u4"),
        ("split", "u1"),  # SPLIT_CODES
        ("pitch_class", "i1"),  # 0..11, NO_KEY when not analysed
        ("mode", "i1"),  # MODE_CODES, NO_KEY when not analysed
        ("tempo_bpm", "<f4"),  # 0 when not analysed
        ("beat_offset", "<u8"),  # first of the song's beats in beats.npy
        ("beat_count", "<u4"),
        # Where the song is audible (frames [loud_start, loud_end)): windows are drawn inside,
        # so silent intros and fade-outs never become a window.
        ("loud_start", "<u4"),
        ("loud_end", "<u4"),
    ]
)


class StoreError(ValueError):
    """A store that cannot be used; the message is one line naming the file and the fix."""


def shard_name(number: int) -> str:
    return f"shard_{number:05d}.f16"


def is_store(folder: str | os.PathLike) -> bool:
    return (Path(folder) / STORE_NAME).is_file()


def read_store_info(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / STORE_NAME
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise StoreError(f"{path}: not a readable store header ({error})") from None
    if not isinstance(info, dict) or info.get("format") != STORE_FORMAT:
        raise StoreError(f"{path}: not a song store (no format {STORE_FORMAT!r})")
    if info.get("version") != STORE_VERSION:
        raise StoreError(
            f"{path}: store version {info.get('version')}, this library reads {STORE_VERSION}: "
            f"rebuild it with creative-prepare-pairs --layout store"
        )
    return info


@dataclass(frozen=True)
class SongView:
    """One song of the store, as the sampler sees it (frames are latent frames)."""

    number: int
    frames: int
    split: str
    tempo_bpm: float
    pitch_class: int
    mode: int


class SongStore:
    """Read access to a built store; cheap to pickle into DataLoader workers (the memmaps are
    reopened there)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.info = read_store_info(self.folder)
        latents = self.folder / LATENTS_DIRNAME
        self.index = self._load_array(latents / INDEX_NAME, INDEX_DTYPE)
        self.beats = self._load_array(latents / BEATS_NAME, np.dtype("<i4"))
        self.dim = int(self.info["codec"]["dim"])
        self.codec_identity: dict = dict(self.info["codec"])
        self.frame_rate = float(self.info["frame_rate"])
        self.sample_rate = int(self.info["sample_rate"])
        self.shards: list[dict] = list(self.info["shards"])
        if len(self.index) != int(self.info["num_songs"]):
            raise StoreError(
                f"{latents / INDEX_NAME}: {len(self.index)} songs, {STORE_NAME} says "
                f"{self.info['num_songs']}: rebuild the store"
            )
        self._maps: dict[int, np.memmap] = {}
        self._verified: set[int] = set()

    def _load_array(self, path: Path, dtype: np.dtype) -> np.ndarray:
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError, EOFError) as error:
            raise StoreError(f"{path}: cannot read ({error}); rebuild the store") from None
        if array.dtype != dtype or array.ndim != 1:
            raise StoreError(f"{path}: {array.dtype} {array.shape}, expected 1-D {dtype}")
        return array

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state

    def __len__(self) -> int:
        return len(self.index)

    def split_songs(self, split: str) -> np.ndarray:
        """Song numbers of one split, in store order."""
        return np.flatnonzero(self.index["split"] == SPLIT_CODES[split])

    def song(self, number: int) -> SongView:
        row = self.index[number]
        split = next(name for name, code in SPLIT_CODES.items() if code == row["split"])
        return SongView(
            number=int(number),
            frames=int(row["frames"]),
            split=split,
            tempo_bpm=float(row["tempo_bpm"]),
            pitch_class=int(row["pitch_class"]),
            mode=int(row["mode"]),
        )

    def song_beats(self, number: int) -> np.ndarray:
        row = self.index[number]
        start = int(row["beat_offset"])
        return self.beats[start : start + int(row["beat_count"])]

    def verify(self, shard: int) -> None:
        """Compare a shard's sha256 with the header's (once per process and shard)."""
        if shard in self._verified:
            return
        entry = self.shards[shard]
        path = self.folder / LATENTS_DIRNAME / entry["name"]
        try:
            size = path.stat().st_size
        except OSError as error:
            raise StoreError(f"{path}: missing shard ({error.strerror}); rebuild it") from None
        if size != int(entry["bytes"]) or sha256_file(path) != entry["sha256"]:
            raise StoreError(
                f"{path}: damaged shard (size or sha256 differs from {STORE_NAME}); rebuild it "
                f"with the same creative-prepare-pairs --layout store command"
            )
        self._verified.add(shard)

    def _shard(self, shard: int) -> np.memmap:
        if shard not in self._maps:
            self.verify(shard)
            entry = self.shards[shard]
            path = self.folder / LATENTS_DIRNAME / entry["name"]
            frames = int(entry["bytes"]) // (2 * self.dim)
            self._maps[shard] = np.memmap(path, dtype="<f2", mode="r", shape=(frames, self.dim))
        return self._maps[shard]

    def read(self, number: int, start: int, count: int) -> np.ndarray:
        """Latent frames [start, start + count) of one song as float32 [dim, count]."""
        row = self.index[number]
        if start < 0 or start + count > int(row["frames"]):
            raise IndexError(
                f"frames [{start}, {start + count}) outside song {number} "
                f"({int(row['frames'])} frames)"
            )
        first = int(row["offset"]) + start
        rows = self._shard(int(row["shard"]))[first : first + count]
        return np.ascontiguousarray(rows.T, dtype=np.float32)
