"""Odd audio is named in a warning when decoded: anti-phase stereo, a DC offset, heavy clipping;
ordinary audio gets none."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf

from songweave.audio.io import read_mono

RATE = 24_000


def _music(seconds: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * RATE)) / RATE
    return 0.3 * np.sin(2 * np.pi * 330 * t) + 0.05 * rng.standard_normal(t.size)


CASES = {
    "anti-phase": (lambda m: np.stack([m, -m], axis=1), "anti-phase stereo"),
    "dc": (lambda m: m + 0.1, "DC offset of +0.100"),
    "clipping": (lambda m: np.clip(4 * m, -1, 1), "heavy clipping"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_odd_audio_is_named(tmp_path, caplog, case):
    make, phrase = CASES[case]
    path = tmp_path / f"{case}.wav"
    sf.write(path, make(_music()).astype(np.float32), RATE, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="songweave.audio.io"):
        read_mono(path, RATE)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(f"{path}: ") and phrase in warnings[0]


@pytest.mark.parametrize("channels", [1, 2])
def test_ordinary_audio_gets_no_warning(tmp_path, caplog, channels):
    music = _music()
    audio = music if channels == 1 else np.stack([music, 0.7 * music + 0.05], axis=1) - 0.025
    path = tmp_path / "song.wav"
    sf.write(path, audio.astype(np.float32), RATE)
    with caplog.at_level(logging.WARNING, logger="songweave.audio.io"):
        read_mono(path, RATE)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
