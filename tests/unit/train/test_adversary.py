"""The adversary (--gan_weight, --disc_lr, --disc_update_freq) at unit level: the generator term
never trains the discriminator, a discriminator step does, with --gan_weight 0 there is none, and
its flags are validated. Runs: tests/e2e/test_adversarial.py."""

from __future__ import annotations

import pytest
import torch
from helpers import CHANCE_DISC_LOSS
from helpers import adversarial_config as _config


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


def test_the_arrangement_objective_shows_the_discriminator_both_songs():
    from songweave.train.adversary import real_songs

    batch = {"input_latent": torch.zeros(2, 4, 5), "target_latent": torch.ones(2, 4, 5)}
    assert torch.equal(real_songs(batch, "continuation"), batch["target_latent"])
    both = real_songs(batch, "arrangement")
    assert both.shape == (4, 4, 5) and both[:2].sum() == 0 and both[2:].min() == 1
