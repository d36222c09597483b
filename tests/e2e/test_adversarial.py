"""Adversarial training (--gan_weight, --disc_lr, --disc_update_freq): the discriminator learns
to tell targets from outputs, its state resumes exactly, and with --gan_weight 0 it does not exist.
Unit tests of the adversary: tests/unit/train/test_adversary.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import CHANCE_DISC_LOSS, TINY_ARGS, read_metrics, run_cli
from helpers import adversarial_config as _config

pytestmark = pytest.mark.slow

GAN_FIELDS = ("disc_accuracy_real", "disc_accuracy_fake", "disc_loss", "gen_loss")


# --------------------------------------------------------------------------------------------
# A short adversarial run: the discriminator moves away from chance
# --------------------------------------------------------------------------------------------


def test_short_adversarial_run_discriminator_learns(data, tmp_path):
    from creative_agent import StyleDiscriminator
    from train_simple_worker import train_worker

    run = tmp_path / "run"
    # 8 pairs, batch 2: 4 discriminator steps per epoch, 16 in all. An untrained generator's
    # outputs are easy to tell from real targets; at disc_lr 1e-2 every seed tried separates
    # them completely by the last epoch (the test asks for much less).
    train_worker(
        0,
        1,
        _config(
            data,
            run,
            "--gan_weight",
            "0.1",
            "--disc_lr",
            "1e-2",
            "--epochs",
            "4",
            "--batch_size",
            "2",
        ),
    )
    records = read_metrics(run)
    assert [r["epoch"] for r in records] == [0, 1, 2, 3, 4]
    assert not any(name in records[0] for name in GAN_FIELDS)  # epoch 0: validation only
    for record in records[1:]:
        for name in GAN_FIELDS:
            assert record.get(name) is not None and math.isfinite(record[name]), name
    last = records[-1]
    accuracy = (last["disc_accuracy_real"] + last["disc_accuracy_fake"]) / 2
    assert accuracy >= 0.75, last
    assert last["disc_loss"] < 0.75 * CHANCE_DISC_LOSS, last
    assert last["disc_loss"] < records[1]["disc_loss"], [r["disc_loss"] for r in records[1:]]

    state = torch.load(run / "checkpoint_last.pth", weights_only=True)
    for key in (
        "discriminator_state_dict",
        "discriminator_optimizer_state_dict",
        "discriminator_config",
    ):
        assert key in state, key
    assert not any("discriminator" in name for name in state["model_state_dict"])
    discriminator = StyleDiscriminator(**state["discriminator_config"])
    discriminator.load_state_dict(state["discriminator_state_dict"])  # strict: all keys fit
    optimizer_states = state["discriminator_optimizer_state_dict"]["state"].values()
    steps = {float(s["step"]) for s in optimizer_states}
    assert steps == {16.0}  # updated every step (--disc_update_freq 1)


def test_gan_weight_zero_checkpoint_has_no_discriminator(data, tmp_path):
    from train_simple_worker import train_worker

    run = tmp_path / "run"
    train_worker(
        0,
        1,
        _config(
            data,
            run,
            "--epochs",
            "1",
            "--batch_size",
            "4",
            "--max_steps_per_epoch",
            "1",
            "--max_val_batches",
            "1",
        ),
    )
    state = torch.load(run / "checkpoint_last.pth", weights_only=True)
    assert not any(key.startswith("discriminator") for key in state)
    assert not any(name in read_metrics(run)[-1] for name in GAN_FIELDS)


# --------------------------------------------------------------------------------------------
# Resume equivalence with the discriminator on (single process)
# --------------------------------------------------------------------------------------------


def test_resume_with_gan_equals_straight_run(data, tmp_path):
    from train_simple_worker import train_worker

    # Batch 3 of 8 pairs: 3 steps per epoch, so with --disc_update_freq 2 the discriminator's
    # update steps (global steps 0, 2, 4) straddle the epoch boundary.
    extra = (
        "--gan_weight",
        "0.2",
        "--disc_lr",
        "5e-3",
        "--disc_update_freq",
        "2",
        "--batch_size",
        "3",
        "--dropout",
        "0.1",
        "--shuffle_targets",
        "true",
    )
    straight, split = tmp_path / "straight", tmp_path / "split"
    train_worker(0, 1, _config(data, straight, *extra, epochs=2))
    train_worker(0, 1, _config(data, split, *extra, epochs=1))
    train_worker(
        0, 1, _config(data, split, *extra, epochs=2, resume=str(split / "checkpoint_last.pth"))
    )

    a = torch.load(straight / "checkpoint_last.pth", weights_only=True)
    b = torch.load(split / "checkpoint_last.pth", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for key in ("model_state_dict", "discriminator_state_dict"):
        for name, tensor in a[key].items():
            torch.testing.assert_close(b[key][name], tensor, atol=1e-5, rtol=0, msg=f"{key}.{name}")
    for index, moments in a["discriminator_optimizer_state_dict"]["state"].items():
        other = b["discriminator_optimizer_state_dict"]["state"][index]
        assert float(moments["step"]) == float(other["step"]) == 3.0
        torch.testing.assert_close(other["exp_avg"], moments["exp_avg"], atol=1e-5, rtol=0)
    metrics_a, metrics_b = read_metrics(straight), read_metrics(split)
    assert [r["epoch"] for r in metrics_b] == [0, 1, 2]
    for name in ("val_loss", *GAN_FIELDS):
        assert [r.get(name) for r in metrics_a] == pytest.approx(
            [r.get(name) for r in metrics_b], abs=1e-5
        ), name


# --------------------------------------------------------------------------------------------
# Two processes: the discriminator has its own DDP, the generator's DDP never sees it
# --------------------------------------------------------------------------------------------


def test_two_process_adversarial_run(data, tmp_path):
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
            "0",
            "--tensorboard",
            "false",
            "--gan_weight",
            "0.1",
            "--disc_lr",
            "1e-2",
            "--disc_update_freq",
            "1",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Adversarial training ENABLED (gan_weight=0.1)" in result.stderr
    records = read_metrics(run)
    assert [r["epoch"] for r in records] == [0, 1, 2]
    for name in GAN_FIELDS:
        assert math.isfinite(records[-1][name]), name
    state = torch.load(run / "checkpoint_last.pth", weights_only=True)
    assert "discriminator_state_dict" in state and "discriminator_optimizer_state_dict" in state
    # 8 pairs over 2 ranks, batch 2: 2 steps per epoch, 4 discriminator updates in all.
    optimizer_states = state["discriminator_optimizer_state_dict"]["state"].values()
    steps = {float(s["step"]) for s in optimizer_states}
    assert steps == {4.0}
