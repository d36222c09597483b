"""Training end to end on CPU (gloo): 2-process run, metrics averaged over ranks, resume
equivalence, SIGTERM, worker failure, the seed's checkpoint snippet. (Non-finite steps:
tests/unit/test_train_simple_worker.py.)"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from helpers import ROOT, TINY_ARGS, make_tiny_dataset, read_metrics, run_cli

pytestmark = pytest.mark.slow

DESIGN_NAMES = ("complementarity", "coverage", "balance", "temporal_diversity", "pair_diversity")


# --------------------------------------------------------------------------------------------
# Metrics averaged over ranks
# --------------------------------------------------------------------------------------------


def _reduce_worker(rank: int, world_size: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from songweave.train.log import MetricSums, reduce_metric_sums

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    sums = MetricSums("cpu")
    if rank == 0:  # two samples of loss 1.0
        sums.add({"loss": torch.tensor(1.0), "complementarity": torch.tensor(0.9)}, weight=2)
    else:  # one sample of loss 4.0, a non-finite value (left out), and a rank-1-only name
        sums.add({"loss": torch.tensor(4.0), "complementarity": torch.tensor(0.6)}, weight=1)
        sums.add({"loss": torch.tensor(float("nan"))}, weight=5)
        sums.add({"only_rank1": torch.tensor(3.0)}, weight=1)
    result = reduce_metric_sums(sums, sync_names=True)
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def test_metrics_are_averaged_over_ranks(tmp_path):
    from songweave.runtime.launch_env import find_free_port

    mp.start_processes(
        _reduce_worker, args=(2, find_free_port(), str(tmp_path)), nprocs=2, start_method="spawn"
    )
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert results[0] == results[1]  # every rank sees the same averages
    assert results[0]["loss"] == pytest.approx((2 * 1.0 + 1 * 4.0) / 3)
    assert results[0]["complementarity"] == pytest.approx((2 * 0.9 + 0.6) / 3)
    assert results[0]["only_rank1"] == pytest.approx(3.0)


# --------------------------------------------------------------------------------------------
# A 2-process run end to end
# --------------------------------------------------------------------------------------------


def test_two_process_run_end_to_end(data, tmp_path):
    from model_simple_transformer import SimpleTransformer
    from songweave.runtime.checkpoint import load_checkpoint

    run = tmp_path / "run"
    result = run_cli(
        [
            "--dataset_folder",
            str(data),
            "--checkpoint_dir",
            str(run),
            *TINY_ARGS,
            "--use_creative_agent",
            "true",
            "--world_size",
            "2",
            "--epochs",
            "2",
            "--batch_size",
            "2",
            "--save_every",
            "1",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Creative Agent ENABLED" in result.stderr
    assert "Creative Agent mask regularization loss:" in result.stderr
    assert "(weight=0.1)" in result.stderr

    records = read_metrics(run)
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert records[0]["complementarity"] == pytest.approx(0.75, abs=0.05)  # untrained agent
    for record in records[1:]:
        for key in (
            "train_loss",
            "val_loss",
            "train_reconstruction",
            "val_reconstruction",
            "train_rms_target",
            "val_rms_target",
            "train_mask_reg_loss",
            "grad_norm",
            "samples_per_s",
            "lr",
            "nonfinite_steps",
            *DESIGN_NAMES,
            *(f"train_{n}" for n in DESIGN_NAMES),
        ):
            assert key in record and record[key] is not None, key
            if isinstance(record[key], float):
                assert math.isfinite(record[key]), key
        assert record["nonfinite_steps"] == 0

    for name in (
        "checkpoint_best.pth",
        "checkpoint_last.pth",
        "checkpoint_epoch_1.pth",
        "checkpoint_epoch_2.pth",
    ):
        assert (run / name).exists(), name
    assert not list(run.glob(".*.tmp-*"))  # no temporary file left behind
    state = torch.load(run / "checkpoint_last.pth", weights_only=True)
    for key in (
        "model_state_dict",
        "optimizer_state_dict",
        "scheduler_state_dict",
        "epoch",
        "best_val_loss",
        "model_config",
        "train_config",
        "rng_state",
        "rng_states",
    ):
        assert key in state, key
    assert state["epoch"] == 2 and len(state["rng_states"]) == 2
    assert set(state["rng_state"]) >= {"torch", "numpy", "python"}
    model = SimpleTransformer(**state["model_config"])  # the checkpoint rebuilds its model
    model.load_state_dict(load_checkpoint(run / "checkpoint_best.pth")["model_state_dict"])


def _slow_save_worker(rank: int, world_size: int, port: int, config: dict, out: str) -> None:
    """train_worker, with rank 0's checkpoint writes slowed down; records when each rank's
    last write ended (rank 0) and when train_worker returned (every rank)."""
    import train_simple_worker

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    save = train_simple_worker.save_training_checkpoints

    def slow_save(*args, **kwargs):
        time.sleep(1.5)
        save(*args, **kwargs)
        Path(out, "rank0_saved").write_text(repr(time.time()))

    train_simple_worker.save_training_checkpoints = slow_save
    train_simple_worker.train_worker(rank, world_size, config)
    Path(out, f"rank{rank}_returned").write_text(repr(time.time()))


def test_ranks_leave_only_after_the_last_checkpoint(data, tmp_path):
    """No rank finishes while rank 0 is still writing: a rank that left early would report
    success before the run's files exist (and left gloo racing the interpreter's shutdown)."""
    from songweave.runtime.launch_env import find_free_port

    config = dataclasses.asdict(_config(data, tmp_path / "run", epochs=1))
    mp.start_processes(
        _slow_save_worker,
        args=(2, find_free_port(), config, str(tmp_path)),
        nprocs=2,
        start_method="spawn",
    )
    saved = float((tmp_path / "rank0_saved").read_text())
    for rank in (0, 1):
        assert float((tmp_path / f"rank{rank}_returned").read_text()) >= saved, rank


@pytest.mark.skipif(
    not (shutil.which("c++") or shutil.which("g++")),
    reason="torch.compile on CPU needs a C++ compiler",
)
def test_compiled_training_steps(data, tmp_path):
    """--compile true with DDP: the steps run compiled (a minute or two of compiling on CPU), the
    mask figures still reach the metrics through both wrappers, and the checkpoint holds the
    plain model's weights."""
    from model_simple_transformer import SimpleTransformer

    run = tmp_path / "run"
    result = run_cli(
        [
            "--dataset_folder",
            str(data),
            "--checkpoint_dir",
            str(run),
            *TINY_ARGS,
            "--use_creative_agent",
            "true",
            "--epochs",
            "1",
            "--batch_size",
            "2",
            "--world_size",
            "2",
            "--compile",
            "true",
        ],
        timeout=600,
        env={"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training steps run compiled" in result.stderr
    record = read_metrics(run)[-1]
    assert record["epoch"] == 1 and math.isfinite(record["train_loss"])
    assert 0.5 < record["train_complementarity"] <= 1.0
    state = torch.load(run / "checkpoint_last.pth", weights_only=True)
    assert not any(key.startswith(("_orig_mod.", "module.")) for key in state["model_state_dict"])
    SimpleTransformer(**state["model_config"]).load_state_dict(state["model_state_dict"])


# --------------------------------------------------------------------------------------------
# Resume equivalence (single process, in-process)
# --------------------------------------------------------------------------------------------


def _config(data: Path, folder: Path, **changes):
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
            "--batch_size",
            "3",
            "--schedule",
            "plateau",
            "--plateau_patience",
            "0",
            "--dropout",
            "0.1",
            "--anti_cheating",
            "0.1",
            "--shuffle_targets",
            "true",
            "--save_every",
            "0",
            "--patience",
            "0",
        ]
    )
    return dataclasses.replace(cfg, **changes)


def test_resume_equals_straight_run(data, tmp_path):
    from train_simple_worker import train_worker

    straight, split = tmp_path / "straight", tmp_path / "split"
    train_worker(0, 1, _config(data, straight, epochs=4))
    train_worker(0, 1, _config(data, split, epochs=2))
    train_worker(0, 1, _config(data, split, epochs=4, resume=str(split / "checkpoint_last.pth")))

    a = torch.load(straight / "checkpoint_last.pth", weights_only=True)
    b = torch.load(split / "checkpoint_last.pth", weights_only=True)
    assert a["epoch"] == b["epoch"] == 4
    for name, tensor in a["model_state_dict"].items():
        torch.testing.assert_close(b["model_state_dict"][name], tensor, atol=1e-5, rtol=0, msg=name)
    assert a["scheduler_state_dict"] == b["scheduler_state_dict"]
    assert [r["epoch"] for r in read_metrics(split)] == [0, 1, 2, 3, 4]
    val_a = [r["val_loss"] for r in read_metrics(straight)]
    val_b = [r["val_loss"] for r in read_metrics(split)]
    assert val_a == pytest.approx(val_b, abs=1e-5)


def _agent_and_cascade_change(data: Path, folder: Path, hold_epochs: int) -> tuple[bool, bool]:
    """Train one epoch; (did the mask generator's weights change, did the cascade's)."""
    from songweave.train.setup import build_run
    from train_simple_worker import train_worker

    cfg = _config(data, folder, epochs=1, agent_hold_epochs=hold_epochs)
    initial = {
        name: tensor.clone()
        for name, tensor in build_run(cfg, 0, 1, torch.device("cpu")).model.state_dict().items()
    }
    train_worker(0, 1, cfg)
    trained = torch.load(folder / "checkpoint_last.pth", weights_only=True)["model_state_dict"]
    changed = {name: not torch.equal(trained[name], tensor) for name, tensor in initial.items()}
    agent = [value for name, value in changed.items() if ".mask_generator." in name]
    cascade = [value for name, value in changed.items() if name.startswith("stages.")]
    assert agent and cascade
    return any(agent), any(cascade)


def test_held_agent_keeps_its_weights_while_the_cascade_learns(data, tmp_path):
    assert _agent_and_cascade_change(data, tmp_path / "held", hold_epochs=1) == (False, True)
    assert _agent_and_cascade_change(data, tmp_path / "free", hold_epochs=0) == (True, True)


# --------------------------------------------------------------------------------------------
# Signals and failures
# --------------------------------------------------------------------------------------------


def test_sigterm_to_launcher_writes_loadable_checkpoint(data, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "train_simple_ddp.py"),
            "--dataset_folder",
            str(data),
            "--checkpoint_dir",
            str(run),
            *TINY_ARGS,
            "--world_size",
            "2",
            "--epochs",
            "1000",
            "--batch_size",
            "1",
            "--sync_every",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            metrics = run / "metrics.jsonl"
            if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
                break  # epoch 1 done: training is under way
            time.sleep(0.2)
        assert process.poll() is None, process.stdout.read()[-3000:]
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
        assert time.monotonic() - sent < 60
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output[-3000:]
    assert "stopped by signal" in output
    state = torch.load(run / "checkpoint_last.pth", weights_only=True)
    assert state["epoch"] >= 1
    assert all(torch.isfinite(t).all() for t in state["model_state_dict"].values())


def test_worker_exception_fails_the_job_quickly(data, tmp_path):
    started = time.monotonic()
    result = run_cli(
        [
            "--dataset_folder",
            str(data),
            "--checkpoint_dir",
            str(tmp_path / "run"),
            *TINY_ARGS,
            "--world_size",
            "2",
            "--epochs",
            "3",
            "--batch_size",
            "1",
            "--fail_at_step",
            "1",
        ],
        timeout=90,
    )
    assert result.returncode != 0
    assert time.monotonic() - started < 90
    assert "injected failure at step 1 on rank 1" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: worker 1 failed")


# --------------------------------------------------------------------------------------------
# The seed's "Test on Checkpoint" snippet, verbatim, on a checkpoint trained with default flags
# --------------------------------------------------------------------------------------------

SEED_SNIPPET = """
import torch
from model_simple_transformer import SimpleTransformer

model = SimpleTransformer(
    encoding_dim=128,
    num_transformer_layers=3,
    use_creative_agent=True
)
checkpoint = torch.load('checkpoints_creative_agent/checkpoint_best.pth')
model.load_state_dict(checkpoint['model_state_dict'])

# Test complementarity
with torch.no_grad():
    input_mask, target_mask, _ = model.creative_agent.mask_generator(
        torch.randn(1, 128, 300),
        torch.randn(1, 128, 300)
    )
    overlap = (input_mask * target_mask).mean().item()
    print(f"Complementarity: {(1 - overlap) * 100:.1f}%")
"""


def test_seed_checkpoint_snippet_runs_verbatim(data, tmp_path):
    # Default model flags; only data, speed and device settings are given.
    result = run_cli(
        [
            "--dataset_folder",
            str(data),
            "--use_creative_agent",
            "true",
            "--epochs",
            "1",
            "--batch_size",
            "2",
            "--max_steps_per_epoch",
            "1",
            "--max_val_batches",
            "1",
            "--num_workers",
            "0",
            "--device",
            "cpu",
            "--loss_domain",
            "latent",
        ],
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "checkpoints_creative_agent" / "checkpoint_best.pth").exists()
    snippet = subprocess.run(
        [sys.executable, "-c", SEED_SNIPPET],
        cwd=tmp_path,
        text=True,
        capture_output=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert snippet.returncode == 0, snippet.stderr[-3000:]
    assert "Complementarity:" in snippet.stdout


def test_config_file_continues_a_run(data, tmp_path):
    """config.json holds every resolved flag; --config FILE plus a few flags continues the run."""
    run = tmp_path / "run"
    first = run_cli(
        [
            "--dataset_folder",
            str(data),
            "--checkpoint_dir",
            str(run),
            *TINY_ARGS,
            "--use_creative_agent",
            "true",
            "--epochs",
            "1",
            "--batch_size",
            "4",
        ]
    )
    assert first.returncode == 0, first.stderr[-3000:]
    # TensorBoard (on by default): scalars, and the sound and masks of validation pairs for the
    # untrained model (epoch 0) and after epoch 1.
    from tensorboard.backend.event_processing.event_accumulator import (
        AUDIO,
        IMAGES,
        SCALARS,
        EventAccumulator,
    )

    events = EventAccumulator(
        str(run / "tensorboard"), size_guidance={AUDIO: 0, IMAGES: 0, SCALARS: 0}
    )
    events.Reload()
    tags = events.Tags()
    assert "epoch/val_loss" in tags["scalars"] and "epoch/band_complementarity" in tags["scalars"]
    assert {tag.rsplit("/", 1)[1] for tag in tags["audio"]} == {
        "1_input",
        "2_target",
        "3_masked_mix",
        "4_output",
    }
    assert tags["images"] and [e.step for e in events.Images(tags["images"][0])] == [0, 1]
    config = json.loads((run / "config.json").read_text())
    assert config["epochs"] == 1 and config["use_creative_agent"] is True
    assert config["codec_option"] == {"dim": 16} and "config" not in config
    again = run_cli(["--config", str(run / "config.json"), "--epochs", "2", "--resume", "auto"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert [r["epoch"] for r in read_metrics(run)] == [0, 1, 2]
    assert json.loads((run / "config.json").read_text())["epochs"] == 2
    bad = tmp_path / "bad.json"
    bad.write_text('{"epochs": "many"}')
    refused = run_cli(["--config", str(bad)])
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: --config {bad}: epochs must be int, got 'many'"
    ]


def test_hand_written_cross_song_manifest_trains_end_to_end(tmp_path):
    """A manifest of cross-song pairs written by hand, with segments in folders of their own
    (no train/ or val/ folders), trains through the launcher; a missing file is refused in one
    line naming the manifest line."""
    songs = make_tiny_dataset(tmp_path / "songs", train_pairs=4, val_pairs=2)
    data = tmp_path / "data"
    data.mkdir()
    train = sorted((songs / "train").glob("*.wav"))
    val = sorted((songs / "val").glob("*.wav"))
    lines = [
        {"split": "train", "input_file": str(a), "output_file": str(b), "pairing": "cross_song"}
        for a, b in zip(train, reversed(train))
    ]
    lines += [{"split": "val", "input_file": str(val[0]), "output_file": str(val[-1])}]
    (data / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    run = tmp_path / "run"
    result = run_cli(
        [
            "--dataset_folder",
            str(data),
            "--checkpoint_dir",
            str(run),
            *TINY_ARGS,
            "--use_creative_agent",
            "true",
            "--epochs",
            "1",
            "--batch_size",
            "4",
            "--tensorboard",
            "false",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["epoch"] for r in read_metrics(run)] == [0, 1]
    assert "8 train / 1 val pairs" in result.stderr

    lines[3]["output_file"] = str(tmp_path / "missing.wav")
    (data / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    refused = run_cli(
        [
            "--dataset_folder",
            str(data),
            "--checkpoint_dir",
            str(tmp_path / "r2"),
            *TINY_ARGS,
            "--epochs",
            "1",
        ]
    )
    assert refused.returncode != 0
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "manifest.jsonl line 4" in errors[0], refused.stderr[-2000:]
    assert "Traceback" not in refused.stderr
