"""The training worker: one process per device, started by train_simple_ddp.py, torchrun or srun.

``train_worker(rank, world_size, args)`` reads top to bottom:

1. setup    -- logging, stop-signal handlers, device, process group (gloo on CPU, nccl on CUDA)
2. data     -- WavPairsDataset train/val (cached latents), an epoch-seeded distributed sampler
3. model    -- SimpleTransformer(**model_kwargs) wrapped in DDP
4. loss     -- ReconstructionLoss (+ mask_reg_weight * the agent's mask regularization loss)
               (+ gan_weight * the adversarial generator loss, with its own discriminator)
5. optim    -- AdamW (decay on matrices only), linear warmup then cosine or plateau, grad clipping
6. resume   -- weights, optimizer, schedule, epoch, best loss, RNG states (+ discriminator)
7. loop     -- train_epoch / validate / metrics.jsonl / checkpoints / early stopping

Ranks stay in lock step without host syncs inside a step: a non-finite loss or gradient is agreed
on with one tiny all-reduce and skipped on the device (fused AdamW's ``found_inf``); stop requests
(SIGTERM, SIGUSR1, Ctrl-C) ride on the same all-reduce and are read every ``sync_every`` steps.
Metrics are summed on the device as value * count and averaged over all ranks with one all-reduce
per log interval and per epoch.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import logging
import math
import os
import random
import shutil
import signal
import subprocess
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm import tqdm

from creative_agent import StyleDiscriminator, adversarial_bce
from mask_metrics import METRIC_NAMES
from checkpoint import (BEST_NAME, LAST_NAME, CheckpointError, capture_rng_state,
                        epoch_checkpoint_name, load_checkpoint, require_keys, restore_rng_state,
                        save_checkpoint, RESUME_KEYS)
from train_simple_ddp import TrainConfig, _TRUE, config_from_dict, model_kwargs, setup_logging

log = logging.getLogger("train")

METRICS_NAME = "metrics.jsonl"
MASK_METRICS = METRIC_NAMES


class NonFiniteError(RuntimeError):
    """Training cannot continue: the loss stays non-finite, or the weights became non-finite."""


# ============================================================================================
# Setup: signals, device, process group, seeds
# ============================================================================================

class StopRequest:
    """Remembers the first SIGTERM / SIGUSR1 / SIGINT; the loop acts on it between steps.

    The handler only sets a flag (no logging, no I/O): it can interrupt anything.
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)

    def install(self) -> None:
        self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}

    def uninstall(self) -> None:
        for signum, handler in getattr(self, "_previous", {}).items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signum is None:
            self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def wants_requeue(self) -> bool:
        # SLURM sends SIGUSR1 (--signal=USR1@...) before the time limit; SIGTERM is scancel or
        # preemption, which must not requeue by itself.
        return self.signum == signal.SIGUSR1


def pick_device(cfg: TrainConfig, local_rank: int) -> torch.device:
    if cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    # One GPU per rank: cuda:LOCAL_RANK, or cuda:0 where the scheduler shows each task only its
    # own GPU (CUDA_VISIBLE_DEVICES per task).
    index = local_rank if local_rank < torch.cuda.device_count() else 0
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def init_distributed(rank: int, world_size: int, device: torch.device, timeout_s: float) -> None:
    """env:// rendezvous (MASTER_ADDR/PORT). The timeout bounds every collective, so a rank
    whose peer died fails instead of waiting forever."""
    from datetime import timedelta
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs: dict[str, Any] = {}
    if device.type == "cuda":
        kwargs["device_id"] = device
    dist.init_process_group(backend, rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=timeout_s), **kwargs)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed for (epoch, rank): training randomness is a function of these only, so resuming at an
    epoch boundary replays exactly what a straight run does."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def wrap_ddp(model: nn.Module, device: torch.device) -> DistributedDataParallel:
    """DDP without per-forward buffer broadcasts (the model's buffers are constants) and without
    the unused-parameter search (every trainable parameter takes part in the loss)."""
    import inspect
    options: dict[str, Any] = {"find_unused_parameters": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        options["forward_sync_buffers"] = False
    else:  # older torch
        options["broadcast_buffers"] = False
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                   else None, **options)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside torch.compile's and DDP's wrappers."""
    model = getattr(model, "_orig_mod", model)
    return model.module if isinstance(model, DistributedDataParallel) else model


# ============================================================================================
# Data
# ============================================================================================

class ResumableDistributedSampler(DistributedSampler):
    """DistributedSampler (order = f(seed, epoch)) that can start part-way into an epoch.

    After a mid-epoch stop, ``set_start(n)`` skips the n samples this rank already trained on,
    without loading them.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, shuffle: bool = True,
                 seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=False)
        self.start = 0

    def set_start(self, start: int) -> None:
        self.start = max(0, int(start))

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.start, None)

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


class ShardSampler(Sampler[int]):
    """Indices rank, rank + world, ... in order: every validation pair counted exactly once
    (DistributedSampler would pad with duplicates)."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def build_datasets(cfg: TrainConfig, codec: Any, rank: int, world_size: int):
    from dataset_wav_pairs import WavPairsDataset
    common = dict(return_audio=cfg.loss_domain == "audio", seed=cfg.seed, rank=rank,
                  world_size=world_size)
    train_set = WavPairsDataset(cfg.dataset_folder, codec, split="train",
                                shuffle_targets=cfg.shuffle_targets, unity_test=cfg.unity_test,
                                **common)
    if len(train_set) == 0:
        raise ValueError(f"{cfg.dataset_folder}/train holds no pairs")
    val_set = None
    if any((Path(cfg.dataset_folder) / "val").glob("pair_*_input.wav")):
        val_set = WavPairsDataset(cfg.dataset_folder, codec, split="val",
                                  unity_test=cfg.unity_test, **common)
    if val_set is None or len(val_set) == 0:
        log.warning("%s has no validation pairs: best checkpoint and early stopping use the "
                    "training loss", cfg.dataset_folder)
        val_set = None
    return train_set, val_set


def build_loaders(cfg: TrainConfig, train_set: Dataset, val_set: Dataset | None, rank: int,
                  world_size: int) -> tuple[DataLoader, ResumableDistributedSampler, DataLoader | None]:
    # Our own samplers (not make_dataloader's): the order must be a function of (seed, epoch)
    # for resume equivalence, and a resumed epoch must be able to start mid-way.
    sampler = ResumableDistributedSampler(train_set, world_size, rank, shuffle=True, seed=cfg.seed)
    common = dict(batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                  pin_memory=torch.cuda.is_available() and cfg.device != "cpu",
                  persistent_workers=cfg.num_workers > 0)
    train_loader = DataLoader(train_set, sampler=sampler, **common)
    val_loader = None
    if val_set is not None:
        val_loader = DataLoader(val_set, sampler=ShardSampler(len(val_set), rank, world_size),
                                **common)
    return train_loader, sampler, val_loader


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, Tensor) else v)
            for k, v in batch.items()}


# ============================================================================================
# Model, loss, optimizer, schedule
# ============================================================================================

def build_model(cfg: TrainConfig) -> nn.Module:
    from model_simple_transformer import SimpleTransformer
    model = SimpleTransformer(**model_kwargs(cfg))
    agent = getattr(model, "creative_agent", None)
    discriminator = getattr(agent, "discriminator", None) if agent is not None else None
    if discriminator is not None:
        # Never used in the forward pass (adversarial training has its own discriminator, see
        # build_adversary): frozen so DDP (find_unused_parameters=False) ignores it.
        discriminator.requires_grad_(False)
    return model


def build_loss(cfg: TrainConfig, codec: nn.Module) -> nn.Module:
    from losses import LossWeights, ReconstructionLoss
    weights = LossWeights(input=cfg.loss_weight_input, target=cfg.loss_weight_target,
                          spectral=cfg.loss_weight_spectral, mel=cfg.loss_weight_mel)
    return ReconstructionLoss(codec, loss_domain=cfg.loss_domain, weights=weights)


def build_optimizer(model: nn.Module, cfg: TrainConfig, lr: float | None = None
                    ) -> torch.optim.Optimizer:
    """AdamW at ``lr`` (default --lr), weight decay on matrices only (biases and norm gains are
    not decayed).

    Fused when the device supports it: its ``found_inf`` input skips a non-finite step on the
    device, so no host sync is needed to decide.
    """
    lr = cfg.lr if lr is None else lr
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
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

    def __init__(self, optimizer: torch.optim.Optimizer, kind: str, warmup_steps: int,
                 total_steps: int, plateau_factor: float = 0.5, plateau_patience: int = 5) -> None:
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
        return {"kind": self.kind, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps, "base_lrs": list(self.base_lrs),
                "step_count": self.step_count, "plateau_scale": self.plateau_scale,
                "plateau_best": self.plateau_best, "plateau_bad_epochs": self.plateau_bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # The current flags decide kind/warmup/horizon (e.g. more --epochs); progress is restored.
        self.step_count = int(state["step_count"])
        self.plateau_scale = float(state.get("plateau_scale", 1.0))
        self.plateau_best = float(state.get("plateau_best", math.inf))
        self.plateau_bad_epochs = int(state.get("plateau_bad_epochs", 0))
        self._apply()


# ============================================================================================
# Metrics: device-side sums, one all-reduce to average over ranks
# ============================================================================================

class MetricSums:
    """Running sums of value * weight and of weight per metric name, kept on the device.

    ``add`` never syncs with the host; non-finite values are left out (weight 0).
    ``reduce`` sums over all ranks with ONE all_reduce and returns {name: (sum, weight)}.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.names: list[str] = []
        self._position: dict[str, int] = {}
        self._index_cache: dict[tuple[str, ...], Tensor] = {}
        self.sums = torch.zeros(0, dtype=torch.float64, device=self.device)
        self.weights = torch.zeros(0, dtype=torch.float64, device=self.device)

    def _ensure(self, names: Iterable[str]) -> None:
        new = [n for n in names if n not in self._position]
        if not new:
            return
        for name in new:
            self._position[name] = len(self.names)
            self.names.append(name)
        pad = torch.zeros(len(new), dtype=torch.float64, device=self.device)
        self.sums = torch.cat([self.sums, pad])
        self.weights = torch.cat([self.weights, pad])

    def _index(self, names: tuple[str, ...]) -> Tensor:
        if names not in self._index_cache:
            self._index_cache[names] = torch.tensor([self._position[n] for n in names],
                                                    device=self.device)
        return self._index_cache[names]

    def add(self, values: dict[str, Tensor | float], weight: float | Tensor = 1.0) -> None:
        if not values:
            return
        names = tuple(values)
        self._ensure(names)
        vector = torch.stack([
            v.detach().reshape(()).to(self.device, torch.float64) if isinstance(v, Tensor)
            else torch.tensor(float(v), dtype=torch.float64, device=self.device)
            for v in values.values()])
        finite = torch.isfinite(vector)
        weights = finite.to(torch.float64) * weight
        index = self._index(names)
        self.sums.index_add_(0, index, torch.where(finite, vector, 0.0) * weights)
        self.weights.index_add_(0, index, weights)

    def load(self, state: dict[str, list[float]], keep_values: bool = True) -> None:
        """Restore sums saved by ``state()``; ranks other than 0 pass keep_values=False so the
        global total is counted once but every rank knows the names."""
        self._ensure(state)
        if keep_values:
            for name, (total, weight) in state.items():
                self.sums[self._position[name]] += total
                self.weights[self._position[name]] += weight

    def reduce(self, sync_names: bool = False) -> dict[str, tuple[float, float]]:
        """{name: (sum, weight)} over all ranks. Collective when distributed: every rank calls it.

        sync_names: first agree on the union of names (needed when a rank may have seen none,
        e.g. a validation shard with no batch); otherwise ranks must have added the same names.
        """
        if is_distributed() and sync_names:
            gathered: list[list[str]] = [[] for _ in range(dist.get_world_size())]
            dist.all_gather_object(gathered, list(self.names))
            self._ensure(sorted(set(itertools.chain.from_iterable(gathered))))
        order = sorted(self.names)
        if not order:
            return {}
        index = torch.tensor([self._position[n] for n in order], device=self.device)
        packed = torch.cat([self.sums[index], self.weights[index]])
        if is_distributed():
            dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        values = packed.tolist()
        count = len(order)
        return {name: (values[i], values[count + i]) for i, name in enumerate(order)}

    def state(self) -> dict[str, list[float]]:
        totals = self.sums.tolist()
        weights = self.weights.tolist()
        return {name: [totals[i], weights[i]] for i, name in enumerate(self.names)}


def means(reduced: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Weighted means; metrics that never got a finite value are left out."""
    return {name: total / weight for name, (total, weight) in reduced.items() if weight > 0}


def reduce_metric_sums(sums: MetricSums, sync_names: bool = False) -> dict[str, float]:
    """Average of every metric over all samples of all ranks (collective)."""
    return means(sums.reduce(sync_names=sync_names))


# ============================================================================================
# One step, one epoch, validation
# ============================================================================================

def autocast_for(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


class LossResult(NamedTuple):
    loss: Tensor                      # what backward() sees
    values: dict[str, Tensor]         # detached terms for the metrics
    mask_reg_loss: Tensor | None      # the agent's regularizer (None without the agent)
    output: Tensor                    # the model's output latents (for adversarial terms)


def compute_loss(model: nn.Module, batch: dict[str, Any], loss_fn: nn.Module,
                 mask_reg_weight: float, precision: str = "fp32") -> LossResult:
    """loss = reconstruction + mask_reg_weight * mask_reg_loss (when the agent is on).

    Issue 5's adversarial term (gan_weight * generator_loss on ``output``) joins here.
    """
    inputs, targets = batch["input_latent"], batch["target_latent"]
    with autocast_for(inputs.device, precision):
        output, mask_reg_loss = model(inputs, targets)
    # Losses always in fp32 (ReconstructionLoss also disables autocast inside).
    output = output.float()
    reconstruction, terms = loss_fn(output, inputs, targets,
                                    batch.get("input_audio"), batch.get("target_audio"))
    loss = reconstruction
    values: dict[str, Tensor] = {"reconstruction": reconstruction.detach()}
    values.update({name: value.detach() for name, value in terms.items()})
    if mask_reg_loss is not None:
        mask_reg_loss = mask_reg_loss.float()
        loss = loss + mask_reg_weight * mask_reg_loss
        values["mask_reg_loss"] = mask_reg_loss.detach()
    values["loss"] = loss.detach()
    return LossResult(loss, values, mask_reg_loss, output)


def mask_figures(model: nn.Module) -> dict[str, Tensor]:
    """The DESIGN.md mask statistics of the last forward (+ the agent's regularizer terms)."""
    net = unwrap(model)
    figures = dict(getattr(net, "last_mask_stats", {}) or {})
    agent = getattr(net, "creative_agent", None)
    if agent is not None:
        terms = getattr(agent.mask_generator, "last_terms", {}) or {}
        figures.update({f"reg_{name}": value for name, value in terms.items()
                        if name != "reg_loss"})
    return figures


# --------------------------------------------------------------------------------------------
# Adversarial training (--gan_weight > 0)
# --------------------------------------------------------------------------------------------

GAN_METRICS = ("disc_accuracy_real", "disc_accuracy_fake", "disc_loss", "gen_loss")


@dataclass
class Adversary:
    """A StyleDiscriminator that tells target latents (real) from the model's outputs (fake),
    with its own AdamW at --disc_lr, updated every --disc_update_freq steps.

    It is deliberately not a submodule of the generator model: the generator's DDP never sees
    its parameters (no unused-parameter error, no generator gradients reaching it), and with
    --gan_weight 0 it is not built at all. Distributed, it gets its own DDP wrapper.
    """

    module: nn.Module                  # the StyleDiscriminator (weights, checkpoints)
    optimizer: torch.optim.Optimizer
    weight: float                      # --gan_weight
    update_every: int                  # --disc_update_freq
    max_norm: float                    # --grad_clip (inf = off)
    config: dict[str, int]             # StyleDiscriminator(**config) rebuilds it
    ddp: nn.Module | None = None       # DDP wrapper when distributed (set after resume)

    @property
    def trainable(self) -> nn.Module:
        return self.ddp if self.ddp is not None else self.module


def build_adversary(cfg: TrainConfig, device: torch.device) -> Adversary | None:
    """None when --gan_weight is 0. Built after the generator, so its initialization does not
    change the generator's (same seed, same initial model with or without adversarial loss)."""
    if cfg.gan_weight <= 0:
        return None
    import inspect
    from model_simple_transformer import SimpleTransformer
    # Sized like the creative agent's own discriminator (agent_hidden_dim).
    default_hidden = inspect.signature(SimpleTransformer).parameters["agent_hidden_dim"].default
    config = {"encoding_dim": int(cfg.encoding_dim),
              "hidden_dim": int(model_kwargs(cfg).get("agent_hidden_dim", default_hidden))}
    module = StyleDiscriminator(**config).to(device)
    return Adversary(module=module, optimizer=build_optimizer(module, cfg, lr=cfg.disc_lr),
                     weight=cfg.gan_weight, update_every=cfg.disc_update_freq,
                     max_norm=cfg.grad_clip if cfg.grad_clip > 0 else math.inf, config=config)


def generator_loss(adversary: Adversary, output: Tensor, precision: str = "fp32") -> Tensor:
    """How far the discriminator is from calling ``output`` real. It runs on detached copies of
    the discriminator's weights: the generator's backward reaches the output and stops there."""
    frozen = {name: p.detach() for name, p in adversary.module.named_parameters()}
    with autocast_for(output.device, precision):
        logits = torch.func.functional_call(adversary.module, frozen, (output,))
    return adversarial_bce(logits, is_real=True)


def discriminator_step(adversary: Adversary, real: Tensor, fake: Tensor,
                       precision: str = "fp32") -> dict[str, Tensor]:
    """One discriminator update on real targets against (detached) model outputs; returns its
    loss and accuracies, measured before the update (0-d tensors, no host sync).

    Real and fake share one forward, so DDP sees one forward per backward. DDP averages the
    gradients, so every rank computes the same norm and skips a non-finite update together.
    """
    count = real.shape[0]
    with autocast_for(real.device, precision):
        logits = adversary.trainable(torch.cat([real, fake.detach().to(real.dtype)]))
    loss = adversarial_bce(tuple(l[:count] for l in logits), is_real=True) \
        + adversarial_bce(tuple(l[count:] for l in logits), is_real=False)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(adversary.module.parameters(), adversary.max_norm)
    optimizer_step(adversary.optimizer, (~torch.isfinite(grad_norm)).float())
    adversary.optimizer.zero_grad(set_to_none=True)
    judged_real = torch.sigmoid(logits[0].detach().float()) >= 0.5
    return {"disc_loss": loss.detach(),
            "disc_accuracy_real": judged_real[:count].float().mean(),
            "disc_accuracy_fake": (~judged_real[count:]).float().mean()}


class StepSync:
    """What all ranks must agree on each step, at the cost of one tiny all-reduce (no host sync):
    [non-finite loss or gradient on any rank, stop requested, stop wants requeue].
    The host reads the agreed flags only every ``sync_every`` steps (``poll``)."""

    def __init__(self, device: torch.device, max_nonfinite_steps: int) -> None:
        self.device = device
        self.max_nonfinite_steps = max_nonfinite_steps
        self.local_stop = torch.zeros(2, device=device)
        self.flags = torch.zeros(3, device=device)
        self.streak = torch.zeros((), device=device)
        self.max_streak = torch.zeros((), device=device)
        self.nonfinite = torch.zeros((), device=device)
        self.reported_nonfinite = 0

    def agree(self, loss: Tensor, grad_norm: Tensor, stop: StopRequest) -> Tensor:
        """found_inf for this step: 1.0 on every rank if any rank saw a non-finite value."""
        if stop.requested:
            self.local_stop.fill_(1.0)
            if stop.wants_requeue:
                self.local_stop[1].fill_(1.0)
        bad = (~torch.isfinite(loss.detach().float())) | (~torch.isfinite(grad_norm.float()))
        flags = torch.cat([bad.float().reshape(1), self.local_stop])
        if is_distributed():
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        self.flags = flags
        found_inf = flags[0]
        self.streak = (self.streak + 1.0) * found_inf
        self.max_streak = torch.maximum(self.max_streak, self.streak)
        self.nonfinite = self.nonfinite + found_inf
        return found_inf

    def poll(self, where: str) -> tuple[bool, bool]:
        """Host read (one sync): (stop agreed, requeue agreed); raises on a non-finite streak."""
        stop, requeue, max_streak, nonfinite = torch.stack(
            [self.flags[1], self.flags[2], self.max_streak, self.nonfinite]).tolist()
        self.max_streak = self.streak.clone()
        if nonfinite > self.reported_nonfinite:
            log.warning("skipped %d step(s) with a non-finite loss or gradient (%d in total, %s)",
                        int(nonfinite) - self.reported_nonfinite, int(nonfinite), where)
            self.reported_nonfinite = int(nonfinite)
        if max_streak >= self.max_nonfinite_steps:
            raise NonFiniteError(
                f"loss or gradients non-finite for {int(max_streak)} steps in a row ({where}); "
                f"stopping (no checkpoint written from this state). Try a lower --lr, "
                f"--precision fp32 or a smaller --grad_clip, and resume from the last checkpoint")
        return stop > 0, requeue > 0


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0                       # completed epochs
    batches_done: int = 0                # batches already trained in epoch `epoch` (mid-epoch stop)
    global_step: int = 0                 # batches trained so far, skipped ones included
    best_val_loss: float = math.inf
    best_epoch: int = 0
    epochs_without_improvement: int = 0


# Progress-bar figures (metric name -> label), shown when present.
BAR_FIGURES = {"loss": "loss", "complementarity": "complementarity", "balance": "balance",
               "disc_accuracy_real": "D_acc_real", "disc_accuracy_fake": "D_acc_fake",
               "disc_loss": "D_loss", "gen_loss": "G_loss"}


@dataclass
class EpochOutcome:
    sums: MetricSums
    steps: int
    elapsed_s: float
    stopped: bool = False
    requeue: bool = False


def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                scheduler: LRSchedule, loss_fn: nn.Module, mask_reg_weight: float, *,
                cfg: TrainConfig, progress: Progress, stop: StopRequest, sync: StepSync,
                max_steps: int | None = None, sums: MetricSums | None = None,
                rng_state: dict[str, Any] | None = None, announce: bool = False,
                on_interval: Callable[[dict[str, tuple[float, float]]], None] | None = None,
                adversary: Adversary | None = None) -> EpochOutcome:
    """Train over ``loader`` (already positioned for this epoch) until it ends, ``max_steps``
    batches of the epoch are done, or all ranks agree to stop. Updates ``progress`` in place.

    With an ``adversary`` the generator's loss gains gan_weight * generator_loss and the
    discriminator is updated after the generator every ``update_every`` steps."""
    device = sync.device
    model.train()
    sums = sums or MetricSums(device)
    rank = dist.get_rank() if is_distributed() else 0
    world_size = dist.get_world_size() if is_distributed() else 1
    iterator = iter(loader)
    if rng_state is not None:
        # Restored after the iterator exists: creating it draws from the RNG in a straight run
        # too, before the point where this state was captured.
        restore_rng_state(rng_state)
    total = max_steps if max_steps is not None else progress.batches_done + len(loader)
    tty = os.isatty(2)
    # In a log file (SLURM) the bar updates every 30 s and keeps its last state on its own line.
    bar = tqdm(total=total, initial=progress.batches_done, disable=rank != 0, leave=not tty,
               desc=f"epoch {progress.epoch + 1}/{cfg.epochs}", dynamic_ncols=True,
               mininterval=1.0 if tty else 30.0)
    parameters = [p for p in model.parameters() if p.requires_grad]
    max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
    one = torch.ones((), device=device)
    start, steps, outcome_stop, outcome_requeue = time.perf_counter(), 0, False, False
    while max_steps is None or progress.batches_done < max_steps:
        batch = next(iterator, None)
        if batch is None:
            break
        if cfg.fail_at_step >= 0 and progress.global_step == cfg.fail_at_step \
                and rank == world_size - 1:
            raise RuntimeError(f"injected failure at step {cfg.fail_at_step} on rank {rank} "
                               f"(--fail_at_step)")
        batch = to_device(batch, device)
        batch_size = int(batch["input_latent"].shape[0])

        loss, values, mask_reg_loss, output = compute_loss(model, batch, loss_fn,
                                                           mask_reg_weight, cfg.precision)
        if adversary is not None:
            # values["loss"] stays reconstruction (+ mask reg): comparable with val_loss.
            gen_loss = generator_loss(adversary, output, cfg.precision)
            loss = loss + adversary.weight * gen_loss
            values["gen_loss"] = gen_loss.detach()
        if announce and mask_reg_loss is not None:
            announce = False
            if rank == 0:
                log.info("Creative Agent mask regularization loss: %.6f (weight=%g)",
                         mask_reg_loss.item(), mask_reg_weight)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
        found_inf = sync.agree(loss, grad_norm, stop)
        optimizer_step(optimizer, found_inf)
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        if adversary is not None and progress.global_step % adversary.update_every == 0:
            # After the generator's backward: updating the discriminator in place earlier would
            # invalidate the weights the generator loss was computed with.
            values.update(discriminator_step(adversary, batch["target_latent"], output,
                                             cfg.precision))

        kept = 1.0 - found_inf  # a skipped step contributes no loss figures
        values.update(mask_figures(model))
        sums.add(values, weight=kept * batch_size)
        sums.add({"grad_norm": grad_norm}, weight=kept)
        sums.add({"samples": one}, weight=batch_size)
        sums.add({"nonfinite_steps": one}, weight=found_inf)
        progress.batches_done += 1
        progress.global_step += 1
        steps += 1
        bar.update(1)

        if progress.global_step % cfg.log_every == 0:
            reduced = sums.reduce()  # collective: every rank reaches this at the same step
            if rank == 0:
                current = means(reduced)
                bar.set_postfix({label: f"{current[k]:.4g}" for k, label in BAR_FIGURES.items()
                                 if k in current})
                if on_interval is not None:
                    on_interval(reduced)
        # Reading the agreed flags costs a device sync on GPUs only; on CPU read them every step,
        # so a stop signal never waits for slow steps to add up.
        if sync.device.type == "cpu" or progress.global_step % cfg.sync_every == 0:
            outcome_stop, outcome_requeue = sync.poll(
                f"epoch {progress.epoch + 1}, step {progress.global_step}")
            if outcome_stop:
                break
    bar.close()
    if not outcome_stop:
        outcome_stop, outcome_requeue = sync.poll(f"end of epoch {progress.epoch + 1}")
    return EpochOutcome(sums=sums, steps=steps, elapsed_s=time.perf_counter() - start,
                        stopped=outcome_stop, requeue=outcome_requeue)


@torch.no_grad()
def validate(model: nn.Module, loader: DataLoader | None, loss_fn: nn.Module,
             mask_reg_weight: float, *, device: torch.device, precision: str = "fp32",
             max_batches: int = 0) -> dict[str, float]:
    """Mean losses and mask figures over the whole validation split, all ranks (collective).

    Runs the unwrapped model (no DDP collectives), so ranks may hold different batch counts.
    """
    sums = MetricSums(device)
    if loader is not None:
        net = unwrap(model)
        was_training = net.training
        net.eval()
        for index, batch in enumerate(loader):
            if max_batches and index >= max_batches:
                break
            batch = to_device(batch, device)
            values = compute_loss(net, batch, loss_fn, mask_reg_weight, precision).values
            values.update(mask_figures(net))
            sums.add(values, weight=int(batch["input_latent"].shape[0]))
        net.train(was_training)
    return reduce_metric_sums(sums, sync_names=True)


# ============================================================================================
# Checkpoints, metrics log
# ============================================================================================

def gather_rng_states() -> list[dict[str, Any]]:
    """Every rank's RNG state, in rank order (collective when distributed)."""
    state = capture_rng_state()
    if not is_distributed():
        return [state]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, state)
    return gathered


def check_finite_weights(model: nn.Module, where: str, adversary: Adversary | None = None
                         ) -> None:
    """Weights are identical on all ranks, so every rank reaches the same verdict."""
    modules = [("model", unwrap(model))]
    if adversary is not None:
        modules.append(("discriminator", adversary.module))
    for kind, module in modules:
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise NonFiniteError(f"{kind} weight {name} became non-finite ({where}); not "
                                     f"writing a checkpoint. Resume from the last one with a "
                                     f"lower --lr" + (" / --disc_lr" if kind != "model" else ""))


def checkpoint_state(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: LRSchedule,
                     progress: Progress, cfg: TrainConfig, rng_states: list[dict[str, Any]],
                     partial_epoch: dict[str, Any] | None = None,
                     adversary: Adversary | None = None) -> dict[str, Any]:
    net = unwrap(model)
    state = {
        "format_version": 1,
        "model_state_dict": net.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
        "scheduler_state_dict": scheduler.state_dict(),
        "epoch": progress.epoch,
        "batches_done": progress.batches_done,
        "global_step": progress.global_step,
        "best_val_loss": progress.best_val_loss,
        "best_epoch": progress.best_epoch,
        "epochs_without_improvement": progress.epochs_without_improvement,
        "model_config": dict(getattr(net, "config", {})),
        "train_config": dataclasses.asdict(cfg),
        "rng_state": rng_states[0],
        "rng_states": rng_states,
        "partial_epoch": partial_epoch,
        "world_size": len(rng_states),
        "torch_version": torch.__version__,
    }
    if adversary is not None:  # absent with --gan_weight 0
        state["discriminator_state_dict"] = adversary.module.state_dict()
        state["discriminator_optimizer_state_dict"] = adversary.optimizer.state_dict()
        state["discriminator_config"] = dict(adversary.config)
    return state


def copy_checkpoint(source: Path, destination: Path) -> None:
    """Atomic copy (tmp + fsync + os.replace), cheaper than serializing the state again."""
    tmp = destination.with_name(f".{destination.name}.tmp-{os.getpid()}")
    try:
        shutil.copyfile(source, tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, destination)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def restore_checkpoint(path: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                       scheduler: LRSchedule, progress: Progress,
                       adversary: Adversary | None = None) -> dict[str, Any]:
    """Load weights, optimizer, schedule, progress (and the discriminator with its optimizer);
    returns the checkpoint (RNG, partial)."""
    state = load_checkpoint(path, map_location="cpu")
    require_keys(state, RESUME_KEYS, path)
    saved, current = state.get("model_config") or {}, dict(getattr(model, "config", {}))
    different = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if saved and different:
        key = different[0]
        raise ValueError(f"{path} was trained with {key}={saved.get(key)!r}, these flags give "
                         f"{current.get(key)!r} (and {len(different) - 1} more difference(s)): "
                         f"pass the same model flags to resume")
    try:
        model.load_state_dict(state["model_state_dict"])
        optimizer.load_state_dict(state["optimizer_state_dict"])
    except (RuntimeError, ValueError, KeyError) as error:
        raise CheckpointError(f"{path}: does not fit this model/optimizer "
                              f"({str(error).splitlines()[0]})") from None
    restore_discriminator(path, state, adversary)
    if state.get("scheduler_state_dict"):
        scheduler.load_state_dict(state["scheduler_state_dict"])
    for item in dataclasses.fields(Progress):
        if item.name in state:
            setattr(progress, item.name, type(getattr(progress, item.name))(state[item.name]))
    log.info("resumed from %s: %d epoch(s) done%s, step %d, best val loss %.5g", path,
             progress.epoch, f" + {progress.batches_done} batch(es)" if progress.batches_done
             else "", progress.global_step, progress.best_val_loss)
    return state


def restore_discriminator(path: str, state: dict[str, Any], adversary: Adversary | None) -> None:
    """The discriminator and its optimizer from ``state`` when both sides have one."""
    if adversary is None:
        if "discriminator_state_dict" in state:
            log.info("%s holds a discriminator: not used (--gan_weight 0)", path)
        return
    if "discriminator_state_dict" not in state:
        log.warning("%s has no discriminator (trained with --gan_weight 0): the discriminator "
                    "starts fresh", path)
        return
    try:
        adversary.module.load_state_dict(state["discriminator_state_dict"])
        adversary.optimizer.load_state_dict(state["discriminator_optimizer_state_dict"])
    except (RuntimeError, ValueError, KeyError) as error:
        raise CheckpointError(f"{path}: its discriminator does not fit this one "
                              f"({str(error).splitlines()[0]})") from None


class MetricsLog:
    """metrics.jsonl (one JSON object per epoch) and TensorBoard scalars; rank 0 only."""

    def __init__(self, folder: Path, enabled: bool, resumed_epoch: int | None,
                 tensorboard: bool) -> None:
        self.path = folder / METRICS_NAME
        self.enabled = enabled
        self.writer = None
        self._last_interval: dict[str, tuple[float, float]] = {}
        if not enabled:
            return
        folder.mkdir(parents=True, exist_ok=True)
        kept: list[str] = []
        if resumed_epoch is not None and self.path.exists():
            # Drop epochs after the checkpoint (a run that went on, then crashed).
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("epoch", 0) <= resumed_epoch]
        self.path.write_text("".join(line + "\n" for line in kept))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(folder / "tensorboard"))
            except ImportError:
                log.info("tensorboard not installed: metrics go to %s only", self.path)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                 for k, v in record.items()}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(clean) + "\n")
        if self.writer is not None:
            for key, value in clean.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"epoch/{key}", value, record["epoch"])
            self.writer.flush()

    def interval(self, reduced: dict[str, tuple[float, float]], step: int) -> None:
        """TensorBoard scalars averaged over the last log interval (differences of sums)."""
        if self.writer is None:
            return
        for name, (total, weight) in reduced.items():
            last_total, last_weight = self._last_interval.get(name, (0.0, 0.0))
            if weight - last_weight > 0:
                self.writer.add_scalar(f"train/{name}", (total - last_total) /
                                       (weight - last_weight), step)
        self._last_interval = dict(reduced)

    def reset_interval(self) -> None:
        self._last_interval = {}

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


TRAIN_KEYS = {"loss": "train_loss", "reconstruction": "train_reconstruction",
              "mask_reg_loss": "train_mask_reg_loss", **{name: name for name in GAN_METRICS}}


def epoch_record(epoch: int, train: dict[str, float] | None, train_totals: dict[str, float],
                 val: dict[str, float], lr: float, elapsed_s: float, world_size: int
                 ) -> dict[str, Any]:
    """One metrics.jsonl line. Unprefixed mask figures (DESIGN.md names) are the validation
    ones (the model as it stands after the epoch); train_ prefixed ones average the epoch."""
    record: dict[str, Any] = {"epoch": epoch}
    if train is not None:
        record["train_loss"] = train.get("loss")
    record["val_loss"] = val.get("loss")
    record.update({name: val[name] for name in MASK_METRICS if name in val})
    for name, value in (train or {}).items():
        if name in ("loss", "grad_norm", "samples", "nonfinite_steps"):
            continue
        record[TRAIN_KEYS.get(name, f"train_{name}")] = value
    for name, value in val.items():
        if name == "loss":
            continue
        record[f"val_{name}"] = value
    if train is not None:
        record["grad_norm"] = train.get("grad_norm")
        samples = train_totals.get("samples", 0.0)
        record["samples_per_s"] = samples / elapsed_s if elapsed_s > 0 else None
        record["nonfinite_steps"] = int(round(train_totals.get("nonfinite_steps", 0.0)
                                              / max(1, world_size)))
        record["epoch_time_s"] = elapsed_s
    record["lr"] = lr
    return record


def summary_line(record: dict[str, Any], epochs: int, improved: bool) -> str:
    parts = [f"epoch {record['epoch']}/{epochs}"]
    for key, label in (("train_loss", "train_loss"), ("val_loss", "val_loss"),
                       ("complementarity", "complementarity"), ("coverage", "coverage"),
                       ("balance", "balance"), ("temporal_diversity", "temporal_div"),
                       ("pair_diversity", "pair_div"), ("disc_accuracy_real", "D_acc_real"),
                       ("disc_accuracy_fake", "D_acc_fake"), ("gen_loss", "G_loss"),
                       ("grad_norm", "grad_norm"), ("lr", "lr")):
        if record.get(key) is not None:
            parts.append(f"{label} {record[key]:.4g}")
    if record.get("samples_per_s"):
        parts.append(f"{record['samples_per_s']:.1f} samples/s")
    if record.get("nonfinite_steps"):
        parts.append(f"{record['nonfinite_steps']} non-finite steps skipped")
    if improved:
        parts.append("(best)")
    return " | ".join(parts)


def leave_together() -> None:
    """Hold every rank until rank 0 has written its last checkpoint.

    Besides keeping a rank from reporting success before the run's files exist, the wait lets
    gloo's worker threads release the last collective's tensors while the interpreter is still
    alive: DDP keeps its process group alive to process exit, and a worker that reaches for the
    GIL during interpreter shutdown aborts the process ("terminate called without an active
    exception", exit 134): 3 of 135 two-rank runs of the SLURM test did so before this wait,
    none of 200 after it.
    """
    if is_distributed():
        dist.barrier()


def requeue_slurm_job(cfg: TrainConfig) -> None:
    """`scontrol requeue $SLURM_JOB_ID` when asked to (--requeue or REQUEUE=1) and possible."""
    job_id = os.environ.get("SLURM_JOB_ID")
    wanted = cfg.requeue or os.environ.get("REQUEUE", "").strip().lower() in _TRUE
    if not (wanted and job_id):
        return
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        log.warning("requeue requested but scontrol is not on PATH: job %s not requeued", job_id)
        return
    result = subprocess.run([scontrol, "requeue", job_id], capture_output=True, text=True,
                            timeout=60)
    if result.returncode == 0:
        log.info("requeued SLURM job %s: it resumes from checkpoint_last.pth", job_id)
    else:
        log.warning("scontrol requeue %s failed: %s", job_id, result.stderr.strip())


# ============================================================================================
# The worker
# ============================================================================================

def train_worker(rank: int, world_size: int, args: TrainConfig | dict[str, Any]
                 ) -> dict[str, Any] | None:
    """Entry point of one training process (torch.multiprocessing, torchrun or srun).

    Returns a small summary on rank 0 (None elsewhere). Raises on failure: the launcher turns
    that into a non-zero exit of the whole job.
    """
    # A dict (what the launcher sends) or a TrainConfig; run as a script, train_simple_ddp's
    # class is __main__.TrainConfig, so go through a dict either way.
    cfg = config_from_dict(dataclasses.asdict(args) if dataclasses.is_dataclass(args) else args)
    local_rank = int(os.environ.get("LOCAL_RANK", rank)) if world_size > 1 else 0
    setup_logging(rank)
    stop = StopRequest()
    stop.install()
    try:
        device = pick_device(cfg, local_rank)
        if world_size > 1:
            init_distributed(rank, world_size, device, cfg.dist_timeout)
        return run_training(cfg, rank, world_size, device, stop)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        stop.uninstall()  # matters when called in-process (tests, notebooks)


def run_training(cfg: TrainConfig, rank: int, world_size: int, device: torch.device,
                 stop: StopRequest) -> dict[str, Any] | None:
    from codec import get_codec

    folder = Path(cfg.checkpoint_dir)
    seed_everything(cfg.seed)  # identical initial weights on every rank

    # ---- data: latents are cached once per codec configuration (one process builds)
    codec = get_codec(cfg.codec, weights=cfg.codec_weights or None, **cfg.codec_option)
    train_set, val_set = build_datasets(cfg, codec, rank, world_size)
    train_loader, train_sampler, val_loader = build_loaders(cfg, train_set, val_set, rank,
                                                            world_size)
    steps_per_epoch = math.ceil(train_sampler.num_samples / cfg.batch_size)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)

    # ---- model, loss, optimizer, schedule
    model = build_model(cfg).to(device)
    loss_fn = build_loss(cfg, codec.to(device)).to(device)
    optimizer = build_optimizer(model, cfg)
    scheduler = LRSchedule(optimizer, cfg.schedule, cfg.warmup_steps,
                           total_steps=cfg.epochs * steps_per_epoch,
                           plateau_factor=cfg.plateau_factor,
                           plateau_patience=cfg.plateau_patience)
    adversary = build_adversary(cfg, device)

    # ---- resume
    progress = Progress()
    resumed: dict[str, Any] | None = None
    if cfg.resume:
        resumed = restore_checkpoint(cfg.resume, model, optimizer, scheduler, progress,
                                     adversary)
    elif rank == 0 and (folder / LAST_NAME).exists():
        log.warning("%s already holds checkpoints: a fresh run overwrites them (use --resume "
                    "auto to continue instead)", folder)
    ddp_model = wrap_ddp(model, device) if world_size > 1 else model
    # Only the training steps run compiled: evaluation would compile graphs of its own for a small
    # share of the time, and PyTorch's fused inference path of the encoder layers fails under
    # compile (a fake-kernel stride error in torch 2.14).
    step_model = torch.compile(ddp_model) if cfg.compile else ddp_model
    if adversary is not None and world_size > 1:
        adversary.ddp = wrap_ddp(adversary.module, device)

    metrics_log = MetricsLog(folder, enabled=rank == 0,
                             resumed_epoch=progress.epoch if resumed else None,
                             tensorboard=cfg.tensorboard)
    n_params = sum(p.numel() for p in model.parameters())
    if rank == 0:
        log.info("model: %.2fM parameters, %d stage(s); %d train / %d val pairs; %d process(es) "
                 "on %s; %d steps per epoch", n_params / 1e6, cfg.num_transformer_layers,
                 len(train_set), len(val_set) if val_set is not None else 0, world_size,
                 device.type, steps_per_epoch)
        if cfg.use_creative_agent:
            log.info("Creative Agent ENABLED (mask_reg_weight=%g)", cfg.mask_reg_weight)
        if cfg.compile:
            log.info("torch.compile: the training steps run compiled (the first steps compile)")
        if adversary is not None:
            log.info("Adversarial training ENABLED (gan_weight=%g): discriminator %.2fM "
                     "parameters, lr %g, updated every %d step(s)", cfg.gan_weight,
                     sum(p.numel() for p in adversary.module.parameters()) / 1e6, cfg.disc_lr,
                     cfg.disc_update_freq)

    if resumed is None:
        # Epoch 0: the untrained model, so curves start where training starts.
        initial = validate(ddp_model, val_loader, loss_fn, cfg.mask_reg_weight, device=device,
                           precision=cfg.precision, max_batches=cfg.max_val_batches)
        if rank == 0:
            record = epoch_record(0, None, {}, initial, scheduler.get_last_lr()[0], 0.0,
                                  world_size)
            metrics_log.write(record)
            log.info(summary_line(record, cfg.epochs, improved=False))

    sync = StepSync(device, cfg.max_nonfinite_steps)
    announce = True
    stopped_by_signal = requeue = early_stopped = False
    try:
        while progress.epoch < cfg.epochs:
            epoch = progress.epoch
            # ---- data order and randomness: functions of (seed, epoch, rank) only
            seed_everything(epoch_seed(cfg.seed, epoch, rank))
            train_sampler.set_epoch(epoch)
            train_sampler.set_start(progress.batches_done * cfg.batch_size)
            train_set.set_epoch(epoch)
            sums = MetricSums(device)
            rng_state, elapsed_before = None, 0.0
            if resumed is not None and progress.batches_done:
                partial = resumed.get("partial_epoch") or {}
                sums.load(partial.get("sums", {}), keep_values=rank == 0)
                elapsed_before = float(partial.get("elapsed_s", 0.0))
                rng_states = resumed.get("rng_states") or []
                rng_state = rng_states[rank] if len(rng_states) == world_size else None
            resumed = None
            metrics_log.reset_interval()

            outcome = train_epoch(
                step_model, train_loader, optimizer, scheduler, loss_fn, cfg.mask_reg_weight,
                cfg=cfg, progress=progress, stop=stop, sync=sync, max_steps=steps_per_epoch,
                sums=sums, rng_state=rng_state, announce=announce,
                on_interval=lambda reduced: metrics_log.interval(reduced, progress.global_step),
                adversary=adversary)
            announce = False
            elapsed = elapsed_before + outcome.elapsed_s

            if outcome.stopped and progress.batches_done < steps_per_epoch:
                # ---- stopped mid-epoch: save where we are, resume continues this epoch
                reduced = outcome.sums.reduce(sync_names=True)
                check_finite_weights(ddp_model, f"epoch {epoch + 1}", adversary)
                rng_states = gather_rng_states()
                if rank == 0:
                    partial = {"sums": {k: list(v) for k, v in reduced.items()},
                               "elapsed_s": elapsed}
                    save_checkpoint(folder / LAST_NAME, checkpoint_state(
                        ddp_model, optimizer, scheduler, progress, cfg, rng_states, partial,
                        adversary))
                    log.warning("stopped by signal in epoch %d after %d batch(es): wrote %s; "
                                "continue with --resume auto", epoch + 1, progress.batches_done,
                                folder / LAST_NAME)
                stopped_by_signal, requeue = True, outcome.requeue
                break

            # ---- end of epoch: validate, agree, log, checkpoint
            train_reduced = outcome.sums.reduce(sync_names=True)
            train_means = means(train_reduced)
            train_totals = {k: w for k, (_, w) in train_reduced.items()}
            val = validate(ddp_model, val_loader, loss_fn, cfg.mask_reg_weight, device=device,
                           precision=cfg.precision, max_batches=cfg.max_val_batches)
            progress.epoch, progress.batches_done = epoch + 1, 0
            score = val.get("loss", train_means.get("loss", math.inf))
            improved = math.isfinite(score) and score < progress.best_val_loss
            if improved:
                progress.best_val_loss, progress.best_epoch = score, epoch + 1
                progress.epochs_without_improvement = 0
            else:
                progress.epochs_without_improvement += 1
            scheduler.step_epoch(score)
            record = epoch_record(epoch + 1, train_means, train_totals, val,
                                  scheduler.get_last_lr()[0], elapsed, world_size)

            check_finite_weights(ddp_model, f"end of epoch {epoch + 1}", adversary)
            rng_states = gather_rng_states()
            if rank == 0:
                metrics_log.write(record)
                log.info(summary_line(record, cfg.epochs, improved))
                state = checkpoint_state(ddp_model, optimizer, scheduler, progress, cfg,
                                         rng_states, adversary=adversary)
                save_checkpoint(folder / LAST_NAME, state)
                if improved:
                    copy_checkpoint(folder / LAST_NAME, folder / BEST_NAME)
                if cfg.save_every and (epoch + 1) % cfg.save_every == 0:
                    copy_checkpoint(folder / LAST_NAME, folder / epoch_checkpoint_name(epoch + 1))

            if cfg.patience and progress.epochs_without_improvement >= cfg.patience:
                if rank == 0:
                    log.info("early stopping: no validation improvement for %d epoch(s); best "
                             "epoch %d (val loss %.5g)", cfg.patience, progress.best_epoch,
                             progress.best_val_loss)
                early_stopped = True
                break
            if outcome.stopped:
                stopped_by_signal, requeue = True, outcome.requeue
                if rank == 0:
                    log.warning("stopped by signal after epoch %d: %s written; continue with "
                                "--resume auto", epoch + 1, folder / LAST_NAME)
                break
    finally:
        metrics_log.close()

    if stopped_by_signal and requeue and rank == 0:
        requeue_slurm_job(cfg)
    leave_together()
    if rank != 0:
        return None
    if not stopped_by_signal and not early_stopped:
        log.info("training finished: %d epoch(s), best epoch %d (val loss %.5g); checkpoints in "
                 "%s", progress.epoch, progress.best_epoch, progress.best_val_loss, folder)
    return {"epoch": progress.epoch, "best_val_loss": progress.best_val_loss,
            "best_epoch": progress.best_epoch, "stopped_by_signal": stopped_by_signal,
            "early_stopped": early_stopped, "checkpoint_dir": str(folder)}
