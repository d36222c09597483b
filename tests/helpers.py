"""Helpers shared by the unit tests (tests/unit) and the end-to-end runs (tests/e2e).

tests/conftest.py puts this folder on sys.path, so every test file imports them as
`from helpers import ...`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

# The repository root: the card's four modules and the songweave package.
ROOT = Path(__file__).resolve().parents[1]

SAMPLE_RATE = 24000
SEGMENT = SAMPLE_RATE // 4  # 0.25 s pairs

# A tiny model on a 16-channel MDCT: every run below takes seconds on one core.
TINY_ARGS = [
    "--codec_option",
    "dim=16",
    "--encoding_dim",
    "16",
    "--nhead",
    "2",
    "--num_layers",
    "1",
    "--num_transformer_layers",
    "2",
    "--model_option",
    "dim_feedforward=32",
    "--model_option",
    "agent_hidden_dim=16",
    "--loss_domain",
    "latent",
    "--num_workers",
    "0",
    "--device",
    "cpu",
    "--warmup_steps",
    "2",
    "--log_every",
    "1",
]

# creative-bench's flags for a tiny run. The codec's dim is 128, so the model keeps
# encoding_dim 128 and shrinks everything else.
BENCH_TINY_ARGS = [
    "--batch_size",
    "2",
    "--seq_frames",
    "16",
    "--num_layers",
    "1",
    "--dim_feedforward",
    "64",
    "--agent_hidden_dim",
    "32",
    "--steps",
    "2",
    "--warmup",
    "1",
    "--threads",
    "1",
]


# Discriminator loss at chance: two heads, each BCE(real) + BCE(fake) = 2 ln 2.
CHANCE_DISC_LOSS = 4 * math.log(2)


def make_tiny_dataset(root: Path, train_pairs: int = 8, val_pairs: int = 4, seed: int = 0) -> Path:
    """DATA/{train,val}/pair_NNNNN_{input,output}.wav: 0.25 s tones plus noise at 24 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(SEGMENT) / SAMPLE_RATE
    for split, count in (("train", train_pairs), ("val", val_pairs)):
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            for role in ("input", "output"):
                tone = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t)
                wav = tone + 0.05 * rng.standard_normal(SEGMENT)
                sf.write(
                    folder / f"pair_{index:05d}_{role}.wav", wav.astype(np.float32), SAMPLE_RATE
                )
    return root


def make_named_pair_dataset(root: Path) -> Path:
    """ROOT/data/train with one empty pair: configuration checks look for pairs by name only;
    no audio is opened."""
    (root / "data" / "train").mkdir(parents=True)
    (root / "data" / "train" / "pair_00000_input.wav").touch()
    (root / "data" / "train" / "pair_00000_output.wav").touch()
    return root / "data"


def make_compare_masks_data(root: Path) -> Path:
    """A tiny prepare_pairs folder for creative-compare-masks: 4 train and 3 val pairs."""
    data = make_tiny_dataset(root / "data", train_pairs=4, val_pairs=3)
    # A prepare_pairs folder has a manifest; --demo would synthesize songs into DATA without one.
    lines = [
        {
            "split": split,
            "input_file": f"{split}/pair_{i:05d}_input.wav",
            "output_file": f"{split}/pair_{i:05d}_output.wav",
        }
        for split, count in (("train", 4), ("val", 3))
        for i in range(count)
    ]
    (data / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return data


def run_cli(
    args: list[str],
    cwd: Path | None = None,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """train_simple_ddp.py ARGS in a fresh interpreter."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "train_simple_ddp.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=full_env,
    )


def read_metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def adversarial_config(data: Path, folder: Path, *extra: str, **changes):
    """The tiny model with the creative agent, no checkpoint copies, no early stop, no
    TensorBoard; EXTRA flags and CHANGES to the parsed configuration on top."""
    from songweave.train.config import parse_config

    cfg = parse_config(
        [
            "--dataset_folder",
            str(data),
            "--checkpoint_dir",
            str(folder),
            *TINY_ARGS,
            "--use_creative_agent",
            "true",
            "--save_every",
            "0",
            "--patience",
            "0",
            "--tensorboard",
            "false",
            *extra,
        ]
    )
    return dataclasses.replace(cfg, **changes)


MAJOR_TRIADS = ((0, 4, 7), (5, 9, 12), (7, 11, 14), (0, 4, 7))  # I IV V I


def beat_song(bpm: float, tonic: int, seconds: float = 12.0, offset: float = 0.0) -> np.ndarray:
    """Kick-like clicks on every beat from `offset`, over a I-IV-V-I progression in the major
    key of pitch class `tonic`, one chord per bar of four beats."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    audio = np.zeros_like(t)
    period = 60.0 / bpm
    for index, beat in enumerate(np.arange(offset, seconds, period)):
        start = int(beat * SAMPLE_RATE)
        n = min(int(0.08 * SAMPLE_RATE), len(t) - start)
        decay = np.exp(-np.arange(n) / (0.012 * SAMPLE_RATE))
        audio[start : start + n] += (
            0.8 * np.sin(2 * np.pi * 60 * np.arange(n) / SAMPLE_RATE) * decay
        )
        if index % 4 == 0:  # a new chord on each bar
            chord = MAJOR_TRIADS[(index // 4) % 4]
            length = min(int(4 * period * SAMPLE_RATE), len(t) - start)
            tt = np.arange(length) / SAMPLE_RATE
            for step in chord:
                frequency = 261.63 * 2 ** ((tonic + step) / 12)
                for harmonic in (1, 2, 3):
                    audio[start : start + length] += (
                        0.08 / harmonic * np.sin(2 * np.pi * frequency * harmonic * tt)
                    )
    return (0.5 * audio / np.abs(audio).max()).astype(np.float32)


CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1300,2600",
)
PLAYERS_SCRIPT = (
    "return Array.from(document.querySelectorAll('audio')).map(a => "
    "[a.getAttribute('src'), a.readyState, a.duration, Number(a.dataset.seconds),"
    " a.error ? a.error.code : null])"
)


def headless_chromium(profile: Path):
    """A selenium driver of the system's Chromium; skips the test where there is none."""
    import shutil

    import pytest

    webdriver = pytest.importorskip("selenium.webdriver")
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("chromium and chromedriver are not installed (.ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(
        options=options, service=webdriver.ChromeService(executable_path=driver_path)
    )


def loaded_players(driver, timeout: float = 30.0) -> list:
    """[src, readyState, duration, data-seconds, error code] of every player, once all loaded
    their metadata or `timeout` passed."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        players = driver.execute_script(PLAYERS_SCRIPT)
        if all(state >= 1 for _, state, _, _, _ in players) or time.monotonic() > deadline:
            return players
        time.sleep(0.2)
