"""The optimizer and the learning-rate schedule of a training run."""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)


def build_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW at ``lr``, weight decay on matrices only (biases and norm gains are not decayed).

    Fused when the device supports it: its ``found_inf`` input skips a non-finite step on the
    device, so no host sync is needed to decide.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, ValueError) as error:
        log.info("fused AdamW unavailable (%s): non-finite steps are checked on the host", error)
        return torch.optim.AdamW(groups, lr=lr)


def optimizer_step(optimizer: torch.optim.Optimizer, found_inf: Tensor) -> None:
    """Update unless ``found_inf`` (0-d float, identical on all ranks) is 1."""
    if optimizer.defaults.get("fused"):
        # Fused Adam skips the update and rolls back its step counter where found_inf == 1.
        optimizer.found_inf = found_inf.float()  # type: ignore[attr-defined]
        optimizer.step()
    elif not bool(found_inf):  # host sync, only on devices without the fused kernel
        optimizer.step()


class LRSchedule:
    """Linear warmup, then cosine decay to 0 or reduce-on-plateau; plain-value state dict.

    ``step()`` after every optimizer step, ``step_epoch(val_loss)`` after every validation.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        kind: str,
        warmup_steps: int,
        total_steps: int,
        plateau_factor: float = 0.5,
        plateau_patience: int = 5,
    ) -> None:
        self.optimizer = optimizer
        self.kind = kind
        self.warmup_steps = int(warmup_steps)
        self.total_steps = max(1, int(total_steps))
        self.plateau_factor = float(plateau_factor)
        self.plateau_patience = int(plateau_patience)
        self.base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        self.step_count = 0
        self.plateau_scale = 1.0
        self.plateau_best = math.inf
        self.plateau_bad_epochs = 0
        self._apply()

    def factor(self) -> float:
        warm = min(1.0, (self.step_count + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        if self.kind == "plateau":
            return warm * self.plateau_scale
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, max(0.0, (self.step_count - self.warmup_steps) / span))
        return warm * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _apply(self) -> None:
        factor = self.factor()
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def step_epoch(self, metric: float | None) -> None:
        if self.kind != "plateau" or metric is None or not math.isfinite(metric):
            return
        if metric < self.plateau_best:
            self.plateau_best, self.plateau_bad_epochs = metric, 0
            return
        self.plateau_bad_epochs += 1
        if self.plateau_bad_epochs > self.plateau_patience:
            self.plateau_scale *= self.plateau_factor
            self.plateau_bad_epochs = 0
            log.info("validation loss plateaued: learning rate x%g", self.plateau_factor)
            self._apply()

    def get_last_lr(self) -> list[float]:
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "base_lrs": list(self.base_lrs),
            "step_count": self.step_count,
            "plateau_scale": self.plateau_scale,
            "plateau_best": self.plateau_best,
            "plateau_bad_epochs": self.plateau_bad_epochs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # The current flags decide kind/warmup/horizon (e.g. more --epochs); progress is restored.
        self.step_count = int(state["step_count"])
        self.plateau_scale = float(state.get("plateau_scale", 1.0))
        self.plateau_best = float(state.get("plateau_best", math.inf))
        self.plateau_bad_epochs = int(state.get("plateau_bad_epochs", 0))
        self._apply()
