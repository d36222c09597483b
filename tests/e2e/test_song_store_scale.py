"""The song store at 1,000 songs: loader memory per song, distinct windows against the fixed
cuts, the duration weighting, and a killed build that rebuilds only its missing shards.
Start-up time and loader throughput are measured by bench (--dataset_folder STORE)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from songweave.audio.codecs import get_codec
from songweave.data.store_build import StoreConfig, build_store
from songweave.data.store_windows import StoreWindowsDataset

pytestmark = pytest.mark.slow

SONGS = 1000
SOURCE_RATE = 8000  # small files; the build resamples to the codec's 24 kHz


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    songs = root / "songs"
    songs.mkdir()
    rng = np.random.default_rng(0)
    seconds = rng.uniform(5.0, 9.0, SONGS)
    for number, length in enumerate(seconds):
        audio = 0.1 * rng.standard_normal(int(length * SOURCE_RATE))
        sf.write(songs / f"{number:04d}.wav", audio, SOURCE_RATE, subtype="PCM_16")
    config = StoreConfig(window_seconds=0.6, shard_gb=0.02, analyze=False, progress=False)
    codec = get_codec("mdct")
    # Killed after the first of three array tasks: the full build keeps its shards.
    first = build_store(
        songs, root / "store", codec, config.__class__(**{**vars(config), "shard": (0, 3)})
    )
    summary = build_store(songs, root / "store", codec, config)
    return root / "store", codec, first, summary


def test_killed_build_keeps_finished_shards(corpus):
    _, _, first, summary = corpus
    assert summary.merged and summary.songs == SONGS
    assert summary.shards_present == first.shards_built > 0
    assert summary.shards_built == summary.shards_total - first.shards_built


def test_loader_memory_is_under_100_bytes_per_song(corpus):
    folder, codec, _, _ = corpus
    StoreWindowsDataset(folder, codec, split="train")  # imports and caches are not per song
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    dataset = StoreWindowsDataset(folder, codec, split="train")
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(dataset.sampler.songs) > 800
    assert held <= 100 * SONGS, held


def test_windows_are_many_times_the_fixed_cuts_and_weighted_by_duration(corpus):
    folder, codec, _, _ = corpus
    dataset = StoreWindowsDataset(folder, codec, split="train")
    sampler = dataset.sampler
    fixed = sampler.fixed_cuts()
    reachable = int(np.sum(sampler.song_frames - 2 * sampler.frames + 1))
    assert reachable >= 100 * fixed, (reachable, fixed)
    epoch = [sampler.draw(g) for g in range(len(dataset))]
    assert len({(w.input_song, w.input_start) for w in epoch}) >= 0.95 * len(epoch)
    # Chi-squared of the drawn songs against duration weights, songs pooled into 20 bins.
    draws = 40000
    positions = np.searchsorted(sampler.songs, [sampler.draw(g).input_song for g in range(draws)])
    bins = np.arange(len(sampler.songs)) * 20 // len(sampler.songs)
    counts = np.bincount(bins[positions], minlength=20)
    expected = draws * np.bincount(bins, weights=sampler.song_frames) / sampler.song_frames.sum()
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 43.8  # 99.9th percentile, 19 degrees of freedom
