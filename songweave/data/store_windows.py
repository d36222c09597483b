"""Training and validation pairs from a song store, as the training loop consumes them.

``StoreWindowsDataset[g]`` is sample g of the run's global sequence (songweave/data/
window_sampler.py), with the same item keys as the pair folders' dataset (data/wav_pairs.py).
``GlobalWindowSampler`` hands each rank its share of that sequence: at global step s, rank r of W
with batch B takes samples c + s * B * W + r * B + j (j < B), c being the samples consumed
before the epoch started. A resumed run passes c and continues the same sequence whatever its
world size, batch size or worker count.

An epoch is as many samples as the fixed-cut layout would have pairs (floor(frames / window) - 1
per song), so epochs stay comparable with a pair folder of the same songs; its windows are new
ones every epoch. Validation draws its windows from the validation songs with the store's own
seed, the same ones on every run and epoch.

With ``return_audio`` the reference audio is decoded from the latents in the loader worker:
a window of T frames decodes to exactly (T - 1) hops of the song (MDCT windows overlap by half,
so both halves of every decoded block are in the window), cropped to the window's samples.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from songweave.audio.io import write_audio
from songweave.data.song_store import SONGS_NAME, SongStore, StoreError
from songweave.data.window_sampler import Window, WindowSampler, describe_draws

log = logging.getLogger(__name__)

# Draws summarised in the log when a dataset opens.
DESCRIBED_DRAWS = 2048
# The store's small listening set: the first validation windows as WAVs, to hear what trains.
LISTENING_DIRNAME = "listening"
LISTENING_PAIRS = 8


def check_store_codec(store: SongStore, codec: Any) -> None:
    """The store's latents must come from this very codec."""
    identity = dict(codec.identity())
    if store.codec_identity != identity:
        different = sorted(
            key
            for key in set(identity) | set(store.codec_identity)
            if identity.get(key) != store.codec_identity.get(key)
        )
        raise StoreError(
            f"{store.folder}: latents of codec {store.codec_identity.get('name')} differ from "
            f"this run's codec in {', '.join(different)}: build a store with this codec "
            f"(creative-prepare-pairs --layout store --codec {codec.name} --out NEW)"
        )


class StoreWindowsDataset(Dataset):
    """item: dict(input_latent [D, T] float32, target_latent [D, T], index int (the sample),
    target_index int (the target song), input_audio / target_audio [1, S] with return_audio)."""

    def __init__(
        self,
        folder: str | os.PathLike,
        codec: Any,
        split: str = "train",
        unity_test: bool = False,
        return_audio: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.store = SongStore(folder)
        check_store_codec(self.store, codec)
        info = self.store.info
        self.split = split
        self.unity_test = unity_test
        self.return_audio = return_audio
        self.codec = codec if return_audio else None
        self.frame_count = int(info["window_frames"])
        self.num_samples = int(round(float(info["window_seconds"]) * self.store.sample_rate))
        self.dim = self.store.dim
        self.sample_rate = self.store.sample_rate
        # Validation windows are the store's, not the run's: the same for every run.
        draw_seed = int(info["seed"]) if split != "train" else int(seed)
        self.sampler = WindowSampler(
            self.store, split, self.frame_count, float(info["cross_fraction"]), draw_seed
        )
        self.samples_per_epoch = self.sampler.fixed_cuts()
        summary = describe_draws(self.sampler, 0, min(DESCRIBED_DRAWS, self.samples_per_epoch))
        log.info(
            "rank %d/%d: store %s split %s: %d songs, %d windows of %d frames per epoch; %s",
            rank,
            world_size,
            self.store.folder,
            split,
            len(self.sampler.songs),
            self.samples_per_epoch,
            self.frame_count,
            summary.describe(),
        )

    def __len__(self) -> int:
        return self.samples_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Nothing to do: a window depends on its sample number alone."""

    def window(self, sample: int) -> Window:
        return self.sampler.draw(sample)

    def _audio(self, latent: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            audio = self.codec.decode(latent[None])[0]
        return audio[:, : self.num_samples].clone()

    def __getitem__(self, sample: int) -> dict[str, Any]:
        if sample < 0:
            raise IndexError(f"sample {sample} < 0")
        window = self.window(int(sample))
        frames = self.frame_count
        input_latent = torch.from_numpy(
            self.store.read(window.input_song, window.input_start, frames)
        )
        if self.unity_test:
            target_latent = input_latent.clone()
        else:
            target_latent = torch.from_numpy(
                self.store.read(window.target_song, window.target_start, frames)
            )
        item: dict[str, Any] = {
            "input_latent": input_latent,
            "target_latent": target_latent,
            "index": int(sample),
            "target_index": window.input_song if self.unity_test else window.target_song,
        }
        if self.return_audio:
            item["input_audio"] = self._audio(input_latent)
            item["target_audio"] = (
                item["input_audio"].clone() if self.unity_test else self._audio(target_latent)
            )
        return item


class GlobalWindowSampler(Sampler[int]):
    """This rank's sample numbers of one epoch: see the module docstring."""

    def __init__(self, samples_per_epoch: int, rank: int, world_size: int, batch_size: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.global_batch = batch_size * world_size
        self.steps = max(1, math.ceil(samples_per_epoch / self.global_batch))
        self.num_samples = self.steps * batch_size  # per rank and epoch
        self.consumed = 0
        self.steps_done = 0

    def position(self, epoch: int, steps_done: int, batch_size: int, samples_consumed: int) -> None:
        """Start the next iteration at global sample ``samples_consumed``, ``steps_done`` steps
        into the epoch (only the count of steps left depends on it; the epoch number and the
        batch size the sampler was built with change nothing)."""
        self.consumed = max(0, int(samples_consumed))
        self.steps_done = max(0, min(int(steps_done), self.steps))

    def __iter__(self) -> Iterator[int]:
        base = self.consumed + self.rank * self.batch_size
        for step in range(self.steps - self.steps_done):
            first = base + step * self.global_batch
            yield from range(first, first + self.batch_size)

    def __len__(self) -> int:
        return (self.steps - self.steps_done) * self.batch_size


def steps_done_in_new_layout(
    samples_per_epoch: int,
    old_batch: int,
    old_world: int,
    old_steps_done: int,
    new_batch: int,
    new_world: int,
) -> int:
    """Steps of the resumed epoch to count as done under another batch size or world size, so
    that the steps left cover the samples the old layout had left in the epoch."""
    old_steps = max(1, math.ceil(samples_per_epoch / (old_batch * old_world)))
    new_steps = max(1, math.ceil(samples_per_epoch / (new_batch * new_world)))
    left = max(0, (old_steps - old_steps_done) * old_batch * old_world)
    return max(0, new_steps - math.ceil(left / (new_batch * new_world)))


def song_sources(folder: str | os.PathLike) -> list[str]:
    """Every song's source path (relative to the songs folder), by song number."""
    lines = (Path(folder) / SONGS_NAME).read_text().splitlines()
    return [json.loads(line)["source"] for line in lines if line.strip()]


def write_listening_set(
    folder: str | os.PathLike, codec: Any, count: int = LISTENING_PAIRS
) -> Path | None:
    """DATA/listening/: the first `count` validation windows decoded from the store's latents
    (pair_NN_input.wav, pair_NN_target.wav, 16-bit) and pairs.jsonl naming their songs and
    starts; None without validation songs. Written aside and renamed into place."""
    folder = Path(folder)
    store = SongStore(folder)
    if not len(store.split_songs("val")):
        return None
    final = folder / LISTENING_DIRNAME
    tmp = folder / f".{LISTENING_DIRNAME}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    dataset = StoreWindowsDataset(folder, codec, split="val", return_audio=True)
    sources = song_sources(folder)
    lines = []
    for number in range(min(count, len(dataset))):
        item = dataset[number]
        window = dataset.window(number)
        for role in ("input", "target"):
            audio = item[f"{role}_audio"][0].numpy()
            write_audio(tmp / f"pair_{number:02d}_{role}.wav", audio, store.sample_rate, "PCM_16")
        lines.append(
            json.dumps(
                {
                    "pair": number,
                    "input": sources[window.input_song],
                    "input_start_s": round(window.input_start / store.frame_rate, 3),
                    "target": sources[window.target_song],
                    "target_start_s": round(window.target_start / store.frame_rate, 3),
                    "cross_song": window.cross_song,
                },
                sort_keys=True,
            )
        )
    (tmp / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final
