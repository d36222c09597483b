"""Throughput and start-up of the song store's loader, as training uses it.

The shards are dropped from the page cache first (``posix_fadvise(DONTNEED)``: the kernel
forgets their clean pages, no root needed), so the figure includes reading from disk; one
DataLoader over StoreWindowsDataset with the run's worker count then serves batches for a fixed
time, and the input latent frames it delivered per second are reported.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from songweave.data.song_store import LATENTS_DIRNAME, SongStore
from songweave.data.store_windows import GlobalWindowSampler, StoreWindowsDataset


def drop_from_page_cache(folder: Path) -> bool:
    """Ask the kernel to forget the shards' cached pages; False where it cannot be asked."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for shard in (folder / LATENTS_DIRNAME).glob("shard_*.f16"):
        fd = os.open(shard, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def measure_loader(
    folder: str | os.PathLike, codec: Any, batch_size: int, num_workers: int, seconds: float
) -> dict[str, Any]:
    folder = Path(folder)
    cold = drop_from_page_cache(folder)
    start = time.perf_counter()
    store = SongStore(folder)
    open_s = time.perf_counter() - start
    start = time.perf_counter()
    dataset = StoreWindowsDataset(folder, codec, split="train")
    dataset_s = time.perf_counter() - start
    sampler = GlobalWindowSampler(10**9, 0, 1, batch_size)
    loader = DataLoader(dataset, sampler=sampler, batch_size=batch_size, num_workers=num_workers)
    frames = windows = 0
    iterator = iter(loader)
    next(iterator)  # the workers' start-up is not throughput
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        batch = next(iterator)
        windows += int(batch["input_latent"].shape[0])
        frames += int(batch["input_latent"].shape[0] * batch["input_latent"].shape[-1])
    elapsed = time.perf_counter() - start
    del iterator
    return {
        "songs": len(store),
        "open_s": open_s,
        "dataset_open_s": dataset_s,
        "num_workers": num_workers,
        "batch_size": batch_size,
        "window_frames": dataset.frame_count,
        "page_cache_dropped": cold,
        "loader_input_frames_per_s": frames / elapsed,
        "loader_windows_per_s": windows / elapsed,
    }
