"""Adversarial training (--gan_weight, --disc_lr, --disc_update_freq): the discriminator learns
to tell targets from outputs, its state resumes exactly, and with --gan_weight 0 it does not exist.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from test_train_ddp import TINY_ARGS, make_tiny_dataset, read_metrics, run_cli

pytestmark = pytest.mark.slow

GAN_FIELDS = ("disc_accuracy_real", "disc_accuracy_fake", "disc_loss", "gen_loss")
# Discriminator loss at chance: two heads, each BCE(real) + BCE(fake) = 2 ln 2.
CHANCE_DISC_LOSS = 4 * math.log(2)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("data"))


def _config(data: Path, folder: Path, *extra: str, **changes):
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


# --------------------------------------------------------------------------------------------
# Units: the generator term never trains the discriminator; a discriminator step does
# --------------------------------------------------------------------------------------------


def test_generator_loss_reaches_the_output_not_the_discriminator(tmp_path):
    from songweave.train.adversary import discriminator_step
    from songweave.train.setup import build_run

    cfg = _config(tmp_path, tmp_path, "--gan_weight", "0.5", "--disc_lr", "1e-2")
    run = build_run(cfg, 0, 1, torch.device("cpu"), with_data=False)
    adversary = run.adversary
    output = torch.randn(2, 16, 40, requires_grad=True)
    run.loss.generator_loss(output).backward()
    assert output.grad is not None and output.grad.abs().sum() > 0
    assert all(p.grad is None for p in adversary.module.parameters())

    before = [p.detach().clone() for p in adversary.module.parameters()]
    figures = discriminator_step(adversary, torch.randn(2, 16, 40), output)
    assert set(figures) == {"disc_loss", "disc_accuracy_real", "disc_accuracy_fake"}
    assert figures["disc_loss"].item() == pytest.approx(CHANCE_DISC_LOSS, abs=0.5)
    assert all(0.0 <= figures[k].item() <= 1.0 for k in figures if k.startswith("disc_acc"))
    after = list(adversary.module.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    assert all(p.grad is None for p in adversary.module.parameters())  # zeroed for the next step


def test_gan_weight_zero_builds_no_discriminator(tmp_path):
    from songweave.train.setup import build_model, build_run

    cfg = _config(tmp_path, tmp_path)
    assert cfg.gan_weight == 0
    run = build_run(cfg, 0, 1, torch.device("cpu"), with_data=False)
    assert run.adversary is None and run.loss.discriminator is None
    model = build_model(cfg)
    assert model.creative_agent.discriminator is None
    assert not any("discriminator" in name for name, _ in model.named_parameters())
    # A discriminator asked for inside the agent is never trained: frozen, so DDP ignores it.
    cfg = _config(tmp_path, tmp_path, "--model_option", "use_discriminator=true")
    embedded = build_model(cfg).creative_agent.discriminator
    assert embedded is not None and not any(p.requires_grad for p in embedded.parameters())


def test_gan_flags_are_validated(tmp_path):
    from songweave.train.config import parse_config, validate_config

    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "pair_00000_input.wav").touch()  # found by name; never opened here
    (tmp_path / "train" / "pair_00000_output.wav").touch()
    base = ["--dataset_folder", str(tmp_path)]
    assert validate_config(parse_config([*base, "--gan_weight", "0.1"]), 0) == []
    for argv, fragment in (
        (["--gan_weight", "-1"], "--gan_weight must be >= 0"),
        (["--disc_lr", "0"], "--disc_lr must be > 0"),
        (["--disc_update_freq", "0"], "--disc_update_freq must be >= 1"),
    ):
        errors = validate_config(parse_config([*base, *argv]), 0)
        assert any(fragment in e for e in errors), errors


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
