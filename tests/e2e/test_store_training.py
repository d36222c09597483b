"""Training from a song store: an epoch, and a mid-epoch resume at another world size and batch
size that continues the global sample sequence where the checkpoint left it."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import TINY_ARGS

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
