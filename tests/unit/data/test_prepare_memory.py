"""prepare_pairs decodes and cuts a song block by block: its peak memory does not grow with the
song's length (a 2-hour 44.1 kHz stereo file is measured in docs/design.md)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from songweave.data.prepare_pairs import PrepareConfig, prepare_pairs

RATE = 44_100
MIB = 1 << 20


def _long_song(path: Path, minutes: int) -> Path:
    path.parent.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", RATE, 2, subtype="PCM_16") as song:
        for minute in range(minutes):
            t = (np.arange(60 * RATE) + minute * 60 * RATE) / RATE
            tone = 0.3 * np.sin(2 * np.pi * 220 * t)
            song.write(
                np.stack([tone, 0.8 * tone], axis=1) + 0.01 * rng.standard_normal((t.size, 2))
            )
    return path


def _peak_bytes(songs: Path, out: Path) -> int:
    tracemalloc.start()
    try:
        prepare_pairs(songs, out, PrepareConfig(progress=False, workers=1))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_song(tmp_path):
    short = _peak_bytes(_long_song(tmp_path / "short" / "a.wav", 1).parent, tmp_path / "d1")
    long = _peak_bytes(_long_song(tmp_path / "long" / "a.wav", 8).parent, tmp_path / "d8")
    # Holding the song would add 8 minutes of 24 kHz float32 (46 MB) and float64 squares of it.
    assert long < short + 8 * MIB, (short / MIB, long / MIB)
    assert long < 64 * MIB, long / MIB
