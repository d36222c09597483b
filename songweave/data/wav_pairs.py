"""Continuation pairs (DATA/<split>/pair_NNNNN_{input,output}.wav) served as cached codec latents.

The wav files are decoded and encoded once per codec configuration; every later run reads
memory-mapped arrays, so training never opens a wav file or runs the codec, and a dataset larger
than RAM still trains.

The pairs come from pair_manifest.list_pairs; their latents from the cache in
songweave/data/latent_cache.py."""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from songweave.data.latent_cache import AUDIO_FILES, LATENT_FILES, cache_key, ensure_cache
from songweave.data.pair_manifest import fingerprint_pairs, list_pairs

log = logging.getLogger(__name__)


def shuffled_target_order(count: int, seed: int, epoch: int) -> np.ndarray:
    """A random permutation with no fixed point (count > 1), a function of (seed, epoch) only."""
    rng = np.random.default_rng([int(seed), int(epoch)])
    order = rng.permutation(count)
    if count < 2:
        return order
    for i in np.flatnonzero(order == np.arange(count)):
        if order[i] != i:  # already fixed by an earlier swap
            continue
        j = int(rng.integers(count - 1))
        j += j >= i  # any position but i; swapping a fixed point with it leaves neither fixed
        order[i], order[j] = order[j], order[i]
    return order


# ----------------------------------------------------------------------------- dataset


class WavPairsDataset(Dataset):
    """Input/target latents (and optionally audio) of the continuation pairs of one split.

    item: dict(input_latent [D,T] float32, target_latent [D,T], index int, target_index int,
               input_audio [1,S], target_audio [1,S] when return_audio)

    shuffle_targets pairs input i with target order[i], order drawn from (seed, epoch) with no
    fixed point; call set_epoch(epoch) every epoch (it reaches DataLoader workers, persistent ones
    included, through a shared-memory counter). Splits other than "train" always use matched pairs.
    unity_test uses each input as its own target. rank/world_size only label log lines: the cache
    lock, not torch.distributed, makes sure one process builds.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        codec: Any,
        split: str = "train",
        shuffle_targets: bool = False,
        unity_test: bool = False,
        return_audio: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        batch_size_for_encoding: int = 16,
        cache_timeout_s: float = 3 * 3600.0,
    ):
        if shuffle_targets and unity_test:
            raise ValueError("shuffle_targets and unity_test exclude each other: pick one")
        if batch_size_for_encoding < 1:
            raise ValueError(f"batch_size_for_encoding must be >= 1, got {batch_size_for_encoding}")
        if shuffle_targets and split != "train":
            log.info(
                "split %r: shuffle_targets ignored, validation always uses matched pairs", split
            )
            shuffle_targets = False
        self.folder = Path(folder)
        self.split = split
        self.shuffle_targets = shuffle_targets
        self.unity_test = unity_test
        self.return_audio = return_audio
        self.seed = int(seed)
        self.rank, self.world_size = rank, world_size

        pairs = list_pairs(self.folder / split)
        identity = dict(codec.identity())
        fingerprint = fingerprint_pairs(pairs)
        key = cache_key(identity, split, fingerprint)
        codec_label = re.sub(r"[^A-Za-z0-9_.-]", "_", str(codec.name))
        self.cache_dir = self.folder / "cache" / f"{codec_label}-{key}" / split
        parts = {"latents", "audio"} if return_audio else {"latents"}
        meta, self.built_cache = ensure_cache(
            self.cache_dir,
            pairs,
            codec,
            parts,
            split=split,
            identity=identity,
            files_fingerprint=fingerprint,
            batch_size=batch_size_for_encoding,
            timeout_s=cache_timeout_s,
        )
        self.codec_name = str(codec.name)
        self.pair_numbers: list[int] = [p.number for p in pairs]
        self.num_pairs = int(meta["num_pairs"])
        self.num_samples = int(meta["num_samples"])
        self.frame_count = int(meta["frame_count"])
        self.dim = int(meta["dim"])
        self.sample_rate = int(meta["sample_rate"])
        # Shared memory so set_epoch in the main process reaches (persistent) DataLoader workers.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._order: np.ndarray | None = None
        self._order_epoch = -1
        self._arrays: dict[str, np.ndarray] | None = None
        self._open_arrays()  # fail here, not in a worker, if the cache is damaged
        log.info(
            "rank %d/%d: %s split %s: %d pairs, latents [%d, %d], %d samples (%s)",
            rank,
            world_size,
            "built" if self.built_cache else "loaded",
            split,
            self.num_pairs,
            self.dim,
            self.frame_count,
            self.num_samples,
            self.cache_dir,
        )

    def _open_arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            names = LATENT_FILES + (AUDIO_FILES if self.return_audio else ())
            expected = {
                "latents": (self.num_pairs, self.dim, self.frame_count),
                "audio": (self.num_pairs, 1, self.num_samples),
            }
            arrays = {}
            for name in names:
                shape = expected["audio" if name in AUDIO_FILES else "latents"]
                try:
                    arrays[name] = np.load(self.cache_dir / name, mmap_mode="r")
                except (OSError, ValueError, EOFError) as exc:
                    raise ValueError(
                        f"{self.cache_dir / name}: damaged latent cache ({exc}); delete "
                        f"{self.cache_dir} and retry"
                    ) from None
                if arrays[name].shape != shape or arrays[name].dtype != np.float32:
                    raise ValueError(
                        f"{self.cache_dir / name}: shape {arrays[name].shape} "
                        f"{arrays[name].dtype}, "
                        f"expected {shape} float32; delete {self.cache_dir} and retry"
                    )
            self._arrays = arrays
        return self._arrays

    def __getstate__(self) -> dict:
        # Workers reopen the memmaps themselves; pickling them would copy the whole array.
        state = self.__dict__.copy()
        state["_arrays"] = None
        return state

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Pick the epoch whose shuffled targets __getitem__ uses (no effect on matched pairs)."""
        self._epoch.fill_(int(epoch))

    def target_index(self, index: int) -> int:
        if not self.shuffle_targets:
            return index
        epoch = int(self._epoch)
        if self._order is None or self._order_epoch != epoch:
            self._order = shuffled_target_order(self.num_pairs, self.seed, epoch)
            self._order_epoch = epoch
        return int(self._order[index])

    def __len__(self) -> int:
        return self.num_pairs

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.num_pairs:
            raise IndexError(f"index {index} out of range for {self.num_pairs} pairs")
        arrays = self._open_arrays()
        target = self.target_index(index)
        # np.array copies out of the read-only memmap, so each tensor owns writable memory.
        item: dict[str, Any] = {
            "input_latent": torch.from_numpy(np.array(arrays["input_latents.npy"][index]))
        }
        if self.unity_test:
            item["target_latent"] = item["input_latent"].clone()
        else:
            item["target_latent"] = torch.from_numpy(np.array(arrays["target_latents.npy"][target]))
        item["index"] = index
        item["target_index"] = index if self.unity_test else target
        if self.return_audio:
            item["input_audio"] = torch.from_numpy(np.array(arrays["input_audio.npy"][index]))
            if self.unity_test:
                item["target_audio"] = item["input_audio"].clone()
            else:
                item["target_audio"] = torch.from_numpy(
                    np.array(arrays["target_audio.npy"][target])
                )
        return item


def make_dataloader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = True,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    drop_last: bool = False,
    pin_memory: bool | None = None,
) -> tuple[DataLoader, DistributedSampler | None]:
    """DataLoader (+ DistributedSampler when world_size > 1, else None).

    Each epoch call sampler.set_epoch(epoch) (when not None) and dataset.set_epoch(epoch) before
    iterating. Workers are persistent, so the memmaps are opened once per worker.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    per_rank = len(dataset) // world_size if drop_last else math.ceil(len(dataset) / world_size)
    if drop_last and per_rank < batch_size:
        raise ValueError(
            f"{len(dataset)} pairs over {world_size} rank(s) give {per_rank} per rank, fewer than "
            f"batch_size {batch_size} with drop_last: no batch at all (lower --batch_size)"
        )
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    common: dict[str, Any] = dict(
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        drop_last=drop_last,
    )
    if world_size > 1:
        sampler = DistributedSampler(
            dataset,
            num_replicas=world_size,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
        return DataLoader(dataset, sampler=sampler, **common), sampler
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(dataset, shuffle=shuffle, generator=generator, **common), None
