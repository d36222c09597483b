"""End-to-end fuzz cases that build or run a model for real (seconds each): `-m slow`."""

from __future__ import annotations

import shutil

import pytest
import soundfile as sf
from fuzz_support import (
    assert_clean_exit,
    fresh_folder,
    run_main,
)
from helpers import TINY_ARGS, make_tiny_dataset
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.slow


def _arrange_argv(assets, out, checkpoint, *extra: str) -> list[str]:
    """creative-arrange on the two asset songs, quiet, on the CPU."""
    songs = ["--input", str(assets["a"]), "--target", str(assets["b"]), "--output", str(out)]
    quiet = ["--progress", "false", "--device", "cpu"]
    return ["--checkpoint", str(checkpoint), *songs, *quiet, *extra]


def _arrange(argv, capsys):
    from songweave.inference import arrange

    return run_main(arrange.main, argv, capsys)


@settings(max_examples=6)
@given(where=st.sampled_from(["first", "middle", "last"]), value=st.sampled_from(["nan", "inf"]))
def test_non_finite_weight_in_an_export_is_refused(where, value, assets, scratch, capsys):
    """An export whose weights hold NaN/inf cannot arrange anything: refused, not zeros + 0."""
    import safetensors.torch as st_torch

    folder = fresh_folder(scratch, "nan-export")
    shutil.copytree(assets["export"], folder / "export")
    tensors = st_torch.load_file(folder / "export" / "model.safetensors")
    names = sorted(tensors)
    name = {"first": names[0], "middle": names[len(names) // 2], "last": names[-1]}[where]
    tensors[name].view(-1)[0] = float(value)
    st_torch.save_file(tensors, folder / "export" / "model.safetensors")
    out = folder / "out.wav"
    argv = _arrange_argv(assets, out, str(folder / "export"))
    run = _arrange(argv, capsys)
    assert_clean_exit(run, "arrange", argv)
    assert run.code != 0, f"{value} in {name}: arranged and exited 0"
    assert not out.exists()


@settings(max_examples=4)
@given(seconds=st.sampled_from(["600", "60", "3600"]))
def test_long_window_on_a_short_song_is_capped(seconds, assets, scratch, capsys):
    """--segment_seconds far beyond the song: the window is capped to the song (fast), or the
    flag is refused; the output has the input's length either way."""
    import time

    out = fresh_folder(scratch, "window") / "out.wav"
    argv = _arrange_argv(assets, out, str(assets["checkpoint"]), "--segment_seconds", seconds)
    started = time.perf_counter()
    run = _arrange(argv, capsys)
    took = time.perf_counter() - started
    assert_clean_exit(run, "arrange", argv)
    if run.code == 0:
        assert sf.info(str(out)).duration == pytest.approx(
            sf.info(str(assets["a"])).duration, abs=0.01
        )
        assert took < 10, f"--segment_seconds {seconds} on a 0.5 s song took {took:.1f} s"


@settings(max_examples=8)
@given(rate=st.sampled_from(["1", "2", "5", "100", "7999"]))
def test_tiny_output_rates_are_refused(rate, assets, scratch, capsys):
    """An output rate no audio file has (a few samples for the whole song) is refused."""
    out = fresh_folder(scratch, "rate") / "out.wav"
    argv = _arrange_argv(assets, out, str(assets["checkpoint"]), "--sample_rate", rate)
    run = _arrange(argv, capsys)
    assert_clean_exit(run, "arrange", argv)
    if run.code == 0:
        info = sf.info(str(out))
        pytest.fail(f"--sample_rate {rate} wrote {info.frames} samples at {info.samplerate} Hz")


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
    """A tiny training run of one epoch, and its checkpoint_last.pth rewritten as a stop after 1
    batch of epoch 2 at --batch_size 2 (what SIGTERM mid-epoch leaves); `argv` asks for 2."""
    import torch

    import train_simple_ddp
    from songweave.runtime.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("resume")
    data = make_tiny_dataset(root / "data")
    run = root / "run"
    argv = [
        "--dataset_folder",
        str(data),
        "--checkpoint_dir",
        str(run),
        *TINY_ARGS,
        "--tensorboard",
        "false",
        "--epochs",
        "2",
        "--batch_size",
        "2",
        "--save_every",
        "0",
        "--world_size",
        "1",
    ]
    first_epoch = list(argv)
    first_epoch[first_epoch.index("--epochs") + 1] = "1"
    assert train_simple_ddp.main(first_epoch) == 0
    last = run / "checkpoint_last.pth"
    state = torch.load(last, weights_only=True)
    state.update(epoch=1, batches_done=1, partial_epoch={"sums": {}, "elapsed_s": 1.0})
    save_checkpoint(last, state)
    return {"data": data, "run": run, "argv": argv, "state": state}


@settings(max_examples=3)
@given(batch_size=st.sampled_from(["1", "3", "4"]))
def test_resume_mid_epoch_with_another_batch_size_is_not_silent(
    batch_size, interrupted_run, scratch, capsys
):
    """Resuming a mid-epoch stop with another --batch_size skips another number of pairs: the
    launcher refuses it or says so (a warning naming --batch_size)."""
    import logging

    import train_simple_ddp

    run = fresh_folder(scratch, "resume") / "run"
    shutil.copytree(interrupted_run["run"], run)
    argv = [a if a != str(interrupted_run["run"]) else str(run) for a in interrupted_run["argv"]]
    i = argv.index("--batch_size")
    argv[i + 1] = batch_size
    argv += ["--resume", "auto", "--max_steps_per_epoch", "1"]
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger().addHandler(handler)
    try:
        result = run_main(train_simple_ddp.main, argv, capsys)
    finally:
        logging.getLogger().removeHandler(handler)
    assert_clean_exit(result, "train", argv, one_line=False)
    said = result.err + "\n".join(r.getMessage() for r in records if r.levelno >= logging.WARNING)
    assert result.code != 0 or "batch_size" in said, (
        f"resumed a mid-epoch stop made at --batch_size 2 with --batch_size {batch_size} silently"
    )


@settings(max_examples=3)
@given(version=st.sampled_from([99, 2, 0]))
def test_resume_refuses_another_format_version(version, interrupted_run, scratch, capsys):
    import torch

    import train_simple_ddp
    from songweave.runtime.checkpoint import save_checkpoint

    run = fresh_folder(scratch, "version") / "run"
    shutil.copytree(interrupted_run["run"], run)
    state = torch.load(run / "checkpoint_last.pth", weights_only=True)
    state["format_version"] = version
    save_checkpoint(run / "checkpoint_last.pth", state)
    argv = [a if a != str(interrupted_run["run"]) else str(run) for a in interrupted_run["argv"]]
    argv += ["--resume", "auto", "--max_steps_per_epoch", "1"]
    result = run_main(train_simple_ddp.main, argv, capsys)
    assert_clean_exit(result, "train", argv, one_line=False)
    assert result.code == 2, f"resumed a checkpoint of format_version {version}"
