"""The discriminator side of adversarial training (--gan_weight > 0).

The generator side, gan_weight * (how far the discriminator is from calling the output real), is
a term of the training loss (losses.TrainingLoss). Here: the discriminator, its optimizer, its
update step and its part of a checkpoint.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from creative_agent import StyleDiscriminator, adversarial_bce
from songweave.runtime.checkpoint import CheckpointError
from songweave.runtime.precision import autocast_for
from songweave.train.optimization import build_optimizer, optimizer_step

log = logging.getLogger(__name__)

GAN_METRICS = ("disc_accuracy_real", "disc_accuracy_fake", "disc_loss", "gen_loss")
STATE_KEY = "discriminator_state_dict"
OPTIMIZER_KEY = "discriminator_optimizer_state_dict"
CONFIG_KEY = "discriminator_config"


@dataclass
class Adversary:
    """A StyleDiscriminator that tells real songs (real_songs) from the model's outputs (fake),
    with its own AdamW at --disc_lr, updated every --disc_update_freq steps.

    It is deliberately not a submodule of the generator model: the generator's DDP never sees
    its parameters (no unused-parameter error, no generator gradients reaching it), and with
    --gan_weight 0 it is not built at all. Distributed, it gets its own DDP wrapper.
    """

    module: nn.Module  # the StyleDiscriminator (weights, checkpoints)
    optimizer: torch.optim.Optimizer
    update_every: int  # --disc_update_freq
    max_norm: float  # --grad_clip (inf = off)
    config: dict[str, int]  # StyleDiscriminator(**config) rebuilds it
    ddp: nn.Module | None = None  # DDP wrapper when distributed (set after resume)

    @property
    def trainable(self) -> nn.Module:
        return self.ddp if self.ddp is not None else self.module

    def checkpoint_entries(self) -> dict[str, Any]:
        """What a checkpoint stores of the adversary."""
        return {
            STATE_KEY: self.module.state_dict(),
            OPTIMIZER_KEY: self.optimizer.state_dict(),
            CONFIG_KEY: dict(self.config),
        }

    def restore(self, path: str, state: dict[str, Any]) -> None:
        """The discriminator and its optimizer from a checkpoint, when it has them."""
        if STATE_KEY not in state:
            log.warning(
                "%s has no discriminator (trained with --gan_weight 0): the "
                "discriminator starts fresh",
                path,
            )
            return
        try:
            self.module.load_state_dict(state[STATE_KEY])
            self.optimizer.load_state_dict(state[OPTIMIZER_KEY])
        except (RuntimeError, ValueError, KeyError) as error:
            raise CheckpointError(
                f"{path}: its discriminator does not fit this one ({str(error).splitlines()[0]})"
            ) from None


def build_adversary(
    encoding_dim: int,
    hidden_dim: int,
    *,
    lr: float,
    weight_decay: float,
    update_every: int,
    grad_clip: float,
    device: torch.device,
) -> Adversary:
    """Built after the generator, so its initialization does not change the generator's (same
    seed, same initial model with or without adversarial loss)."""
    config = {"encoding_dim": int(encoding_dim), "hidden_dim": int(hidden_dim)}
    module = StyleDiscriminator(**config).to(device)
    return Adversary(
        module=module,
        optimizer=build_optimizer(module, lr, weight_decay),
        update_every=update_every,
        max_norm=grad_clip if grad_clip > 0 else math.inf,
        config=config,
    )


def real_songs(batch: dict[str, Tensor], objective: str) -> Tensor:
    """What the discriminator learns to call real: the target songs, and for the arrangement
    objective, whose output should sound like a song in either's place, both songs."""
    if objective == "arrangement":
        return torch.cat([batch["input_latent"], batch["target_latent"]])
    return batch["target_latent"]


def discriminator_step(
    adversary: Adversary, real: Tensor, fake: Tensor, precision: str = "fp32"
) -> dict[str, Tensor]:
    """One discriminator update on real targets against (detached) model outputs; returns its
    loss and accuracies, measured before the update (0-d tensors, no host sync).

    Real and fake share one forward, so DDP sees one forward per backward. DDP averages the
    gradients, so every rank computes the same norm and skips a non-finite update together.
    """
    count = real.shape[0]
    with autocast_for(real.device, precision):
        logits = adversary.trainable(torch.cat([real, fake.detach().to(real.dtype)]))
    loss = adversarial_bce(
        tuple(logit[:count] for logit in logits), is_real=True
    ) + adversarial_bce(tuple(logit[count:] for logit in logits), is_real=False)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(adversary.module.parameters(), adversary.max_norm)
    optimizer_step(adversary.optimizer, (~torch.isfinite(grad_norm)).float())
    adversary.optimizer.zero_grad(set_to_none=True)
    judged_real = torch.sigmoid(logits[0].detach().float()) >= 0.5
    return {
        "disc_loss": loss.detach(),
        "disc_accuracy_real": judged_real[:count].float().mean(),
        "disc_accuracy_fake": (~judged_real[count:]).float().mean(),
    }
