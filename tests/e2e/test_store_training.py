"""Training from a song store: an epoch, and a mid-epoch resume at another world size and batch
size that continues the global sample sequence where the checkpoint left it; a real 2-process
run stopped mid-epoch and resumed at 2 processes and at 1; evaluation reads the store."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import ROOT, TINY_ARGS, run_cli

from songweave.audio.codecs import get_codec
from songweave.data.store_build import StoreConfig, build_store
from songweave.data.store_windows import StoreWindowsDataset, steps_done_in_new_layout
from songweave.runtime.checkpoint import save_checkpoint

pytestmark = pytest.mark.slow


def test_store_trains_and_resumes_mid_epoch_at_another_layout(tmp_path, capsys):
    import train_simple_ddp

    songs = tmp_path / "songs"
    songs.mkdir()
    rng = np.random.default_rng(0)
    for number in range(6):
        audio = 0.1 * rng.standard_normal(int((3 + number) * 24000))
        sf.write(songs / f"{number}.wav", audio.astype(np.float32), 24000)
    codec = get_codec("mdct", dim=16)
    store = tmp_path / "store"
    build_store(songs, store, codec, StoreConfig(window_seconds=0.25, progress=False))
    run = tmp_path / "run"
    argv = [
        "--dataset_folder",
        str(store),
        "--checkpoint_dir",
        str(run),
        *TINY_ARGS,
        "--tensorboard",
        "false",
        "--epochs",
        "1",
        "--batch_size",
        "2",
        "--save_every",
        "0",
        "--world_size",
        "1",
        "--num_workers",
        "0",
    ]
    assert train_simple_ddp.main(argv) == 0
    last = run / "checkpoint_last.pth"
    state = torch.load(last, weights_only=True)
    per_epoch = len(StoreWindowsDataset(store, codec))
    steps = -(-per_epoch // 2)
    assert state["samples_consumed"] == steps * 2
    # As if 2 processes with batch 2 had stopped 3 steps into epoch 2.
    consumed = state["samples_consumed"] + 3 * 2 * 2
    state.update(
        epoch=1,
        batches_done=3,
        samples_consumed=consumed,
        world_size=2,
        rng_states=[state["rng_state"], state["rng_state"]],
        partial_epoch={"sums": {}, "elapsed_s": 1.0},
    )
    save_checkpoint(last, state)
    resumed = list(argv)
    resumed[resumed.index("--epochs") + 1] = "2"
    resumed[resumed.index("--batch_size") + 1] = "3"
    resumed += ["--resume", "auto"]
    capsys.readouterr()
    assert train_simple_ddp.main(resumed) == 0
    assert f"continues at sample {consumed}" in capsys.readouterr().err
    final = torch.load(last, weights_only=True)
    done = steps_done_in_new_layout(per_epoch, 2, 2, 3, 3, 1)
    assert final["samples_consumed"] == consumed + (-(-per_epoch // 3) - done) * 3


def _stop_mid_epoch(argv: list[str], run) -> str:
    """Start a 2-process run, SIGTERM it a few seconds into epoch 1; its output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "train_simple_ddp.py"), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not any("epoch 0/" in line for line in lines):
            assert process.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
            time.sleep(0.1)
        time.sleep(3.0)  # into the epoch's steps
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(timeout=10)
    output = "".join(lines)
    assert process.returncode == 0, output[-3000:]
    return output


def test_two_processes_stopped_mid_epoch_resume_at_two_and_at_one(tmp_path):
    from songweave.eval.evaluate import evaluate

    songs = tmp_path / "songs"
    songs.mkdir()
    rng = np.random.default_rng(1)
    for number in range(6):
        audio = 0.1 * rng.standard_normal(int((16 + 2 * number) * 24000))
        sf.write(songs / f"{number}.wav", audio.astype(np.float32), 24000)
    codec = get_codec("mdct", dim=16)
    store = tmp_path / "store"
    build_store(songs, store, codec, StoreConfig(window_seconds=0.1, progress=False))
    per_epoch = len(StoreWindowsDataset(store, codec))
    run = tmp_path / "run"
    argv = [
        "--dataset_folder",
        str(store),
        "--checkpoint_dir",
        str(run),
        *TINY_ARGS,
        "--tensorboard",
        "false",
        "--epochs",
        "1",
        "--batch_size",
        "1",
        "--world_size",
        "2",
        "--num_workers",
        "0",
    ]
    output = _stop_mid_epoch(argv, run)
    assert "stopped by signal in epoch 1" in output, output[-3000:]
    stopped = torch.load(run / "checkpoint_last.pth", weights_only=True)
    done, consumed = stopped["batches_done"], stopped["samples_consumed"]
    steps = -(-per_epoch // 2)
    assert 0 < done < steps and consumed == done * 2
    single = tmp_path / "run_single"
    shutil.copytree(run, single)

    # 2 -> 2: the same layout goes on with the next global samples and the saved RNG states.
    again = run_cli([*argv, "--resume", "auto"], timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "continues at sample" not in again.stderr
    assert torch.load(run / "checkpoint_last.pth", weights_only=True)["samples_consumed"] == (
        steps * 2
    )

    # 2 -> 1 with batch 3: the sequence goes on from the same sample, cut into other batches.
    one = list(argv)
    one[one.index("--checkpoint_dir") + 1] = str(single)
    one[one.index("--world_size") + 1] = "1"
    one[one.index("--batch_size") + 1] = "3"
    alone = run_cli([*one, "--resume", "auto"], timeout=300)
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert f"continues at sample {consumed}" in alone.stderr
    left = -(-per_epoch // 3) - steps_done_in_new_layout(per_epoch, 1, 2, done, 3, 1)
    final = torch.load(single / "checkpoint_last.pth", weights_only=True)
    assert final["samples_consumed"] == consumed + left * 3

    # Evaluation reads the store's fixed validation windows.
    report = evaluate(single / "checkpoint_last.pth", store, tmp_path / "eval", progress=False)
    assert report["num_pairs"] == len(StoreWindowsDataset(store, codec, split="val"))
