"""One builder for a training run: everything a run needs, in one typed record.

``build_run`` makes the codec, datasets, loaders, model, loss, optimizer, schedule and adversary;
``distribute`` then wraps the model for DDP and compiles the training step. The training worker
and the benchmark both build through here, so the benchmark times exactly what training runs.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from model_simple_transformer import SimpleTransformer
from songweave.audio.band_layout import keep_spread_out_of_compiled_graphs
from songweave.audio.codecs import Codec, get_codec
from songweave.data.song_store import is_store
from songweave.data.store_windows import GlobalWindowSampler
from songweave.runtime.distributed import ResumableDistributedSampler, ShardSampler, wrap_ddp
from songweave.runtime.precision import resolve_precision
from songweave.train.adversary import Adversary, build_adversary
from songweave.train.config import TrainConfig, model_config
from songweave.train.losses import LossWeights, ReconstructionLoss, TrainingLoss
from songweave.train.optimization import LRSchedule, build_optimizer

log = logging.getLogger(__name__)


@dataclass
class TrainingRun:
    """What a training process works with. ``model`` is the plain model (checkpoints, validation);
    ``step_model`` is what the training steps call (DDP-wrapped and/or compiled)."""

    cfg: TrainConfig
    device: torch.device
    rank: int
    world_size: int
    codec: Codec
    train_set: Dataset | None
    val_set: Dataset | None
    train_loader: DataLoader | None
    train_sampler: ResumableDistributedSampler | GlobalWindowSampler | None
    val_loader: DataLoader | None
    steps_per_epoch: int
    model: SimpleTransformer
    loss: TrainingLoss
    optimizer: torch.optim.Optimizer
    scheduler: LRSchedule
    adversary: Adversary | None
    step_model: nn.Module
    store_data: bool = False  # windows drawn from a song store (not a pair folder)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed for (epoch, rank): training randomness is a function of these only, so resuming at an
    epoch boundary replays exactly what a straight run does."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        k: (v.to(device, non_blocking=True) if isinstance(v, Tensor) else v)
        for k, v in batch.items()
    }


def build_datasets(
    cfg: TrainConfig, codec: Codec, rank: int, world_size: int
) -> tuple[Dataset, Dataset | None]:
    """Train and validation pairs: windows drawn from a song store, or a pair folder's cached
    latents (one process builds the cache)."""
    if is_store(cfg.dataset_folder):
        return build_store_datasets(cfg, codec, rank, world_size)
    from songweave.data.pair_manifest import split_has_pairs
    from songweave.data.wav_pairs import WavPairsDataset

    if rank == 0 and not cfg.demo:
        log.info(
            "%s is a folder of pairs cut at fixed places; a song store of the same songs draws "
            "new windows every epoch from about a tenth of the disk: creative-prepare-pairs "
            "--songs SONGS_FOLDER --out NEW_DATA",
            cfg.dataset_folder,
        )
    common = dict(
        return_audio=cfg.loss_domain == "audio", seed=cfg.seed, rank=rank, world_size=world_size
    )
    train_set = WavPairsDataset(
        cfg.dataset_folder,
        codec,
        split="train",
        shuffle_targets=cfg.shuffle_targets,
        unity_test=cfg.unity_test,
        **common,
    )
    if len(train_set) == 0:
        raise ValueError(f"{cfg.dataset_folder}/train holds no pairs")
    val_set = None
    if split_has_pairs(cfg.dataset_folder, "val"):
        val_set = WavPairsDataset(
            cfg.dataset_folder, codec, split="val", unity_test=cfg.unity_test, **common
        )
    if val_set is None or len(val_set) == 0:
        _warn_no_validation(cfg)
        val_set = None
    return train_set, val_set


def _warn_no_validation(cfg: TrainConfig) -> None:
    log.warning(
        "%s has no validation pairs: best checkpoint and early stopping use the training loss",
        cfg.dataset_folder,
    )


def build_store_datasets(
    cfg: TrainConfig, codec: Codec, rank: int, world_size: int
) -> tuple[Dataset, Dataset | None]:
    from songweave.data.song_store import SongStore
    from songweave.data.store_windows import StoreWindowsDataset

    if cfg.shuffle_targets:
        raise ValueError(
            f"--shuffle_targets is for pair folders; the store {cfg.dataset_folder} draws "
            f"cross-song pairs by the --pairing it was built with"
        )
    common = dict(
        unity_test=cfg.unity_test,
        return_audio=cfg.loss_domain == "audio",
        seed=cfg.seed,
        rank=rank,
        world_size=world_size,
    )
    train_set = StoreWindowsDataset(cfg.dataset_folder, codec, split="train", **common)
    val_set = None
    if len(SongStore(cfg.dataset_folder).split_songs("val")):
        val_set = StoreWindowsDataset(cfg.dataset_folder, codec, split="val", **common)
    if val_set is None:
        _warn_no_validation(cfg)
    return train_set, val_set


def build_loaders(
    cfg: TrainConfig, train_set: Dataset, val_set: Dataset | None, rank: int, world_size: int
) -> tuple[DataLoader, ResumableDistributedSampler | GlobalWindowSampler, DataLoader | None]:
    # Our own samplers (not make_dataloader's): the order must be a function of (seed, epoch)
    # for pair folders, of the samples consumed for a store, and a resumed epoch must be able
    # to start mid-way.
    if is_store(cfg.dataset_folder):
        sampler: ResumableDistributedSampler | GlobalWindowSampler = GlobalWindowSampler(
            len(train_set), rank, world_size, cfg.batch_size
        )
    else:
        sampler = ResumableDistributedSampler(
            train_set, world_size, rank, shuffle=True, seed=cfg.seed
        )
    common = dict(
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        pin_memory=torch.cuda.is_available() and cfg.device != "cpu",
        persistent_workers=cfg.num_workers > 0,
    )
    train_loader = DataLoader(train_set, sampler=sampler, **common)
    val_loader = None
    if val_set is not None:
        val_loader = DataLoader(
            val_set, sampler=ShardSampler(len(val_set), rank, world_size), **common
        )
    return train_loader, sampler, val_loader


def build_model(cfg: TrainConfig) -> SimpleTransformer:
    model = SimpleTransformer(model_config(cfg))
    agent = model.creative_agent
    if agent is not None and agent.discriminator is not None:
        # Never used in the forward pass (adversarial training has its own discriminator, see
        # songweave/train/adversary.py): frozen so DDP (find_unused_parameters=False) ignores it.
        agent.discriminator.requires_grad_(False)
    return model


def build_run(
    cfg: TrainConfig,
    rank: int,
    world_size: int,
    device: torch.device,
    *,
    with_data: bool = True,
    prepare_model: Callable[[nn.Module], None] | None = None,
) -> TrainingRun:
    """Everything a run needs, unwrapped (see ``distribute``). ``with_data=False`` builds no
    datasets (the benchmark feeds its own batches); ``prepare_model`` may change the model
    before its optimizer is built (the benchmark swaps layer implementations)."""
    cfg = dataclasses.replace(cfg, precision=resolve_precision(cfg.precision, device))
    seed_everything(cfg.seed)  # identical initial weights on every rank
    codec = get_codec(cfg.codec, weights=cfg.codec_weights or None, **cfg.codec_option)
    train_set = val_set = train_loader = train_sampler = val_loader = None
    steps_per_epoch = cfg.max_steps_per_epoch or 1
    if with_data:
        train_set, val_set = build_datasets(cfg, codec, rank, world_size)
        train_loader, train_sampler, val_loader = build_loaders(
            cfg, train_set, val_set, rank, world_size
        )
        steps_per_epoch = math.ceil(train_sampler.num_samples / cfg.batch_size)
        if cfg.max_steps_per_epoch:
            steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)

    model = build_model(cfg)
    if prepare_model is not None:
        prepare_model(model)
    model = model.to(device)
    weights = LossWeights(
        input=cfg.loss_weight_input,
        target=cfg.loss_weight_target,
        spectral=cfg.loss_weight_spectral,
        mel=cfg.loss_weight_mel,
    )
    reconstruction = ReconstructionLoss(
        codec.to(device), loss_domain=cfg.loss_domain, weights=weights
    )
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
    scheduler = LRSchedule(
        optimizer,
        cfg.schedule,
        cfg.warmup_steps,
        total_steps=cfg.epochs * steps_per_epoch,
        plateau_factor=cfg.plateau_factor,
        plateau_patience=cfg.plateau_patience,
    )
    adversary = None
    if cfg.gan_weight > 0:
        # Sized like the creative agent's own discriminator (agent_hidden_dim).
        adversary = build_adversary(
            cfg.encoding_dim,
            model.config["agent_hidden_dim"],
            lr=cfg.disc_lr,
            weight_decay=cfg.weight_decay,
            update_every=cfg.disc_update_freq,
            grad_clip=cfg.grad_clip,
            device=device,
        )
    loss = TrainingLoss(
        reconstruction,
        cfg.mask_reg_weight,
        cfg.gan_weight,
        adversary.module if adversary is not None else None,
        precision=cfg.precision,
        objective=cfg.objective,
    ).to(device)
    return TrainingRun(
        cfg=cfg,
        device=device,
        rank=rank,
        world_size=world_size,
        codec=codec,
        train_set=train_set,
        val_set=val_set,
        train_loader=train_loader,
        train_sampler=train_sampler,
        val_loader=val_loader,
        steps_per_epoch=steps_per_epoch,
        model=model,
        loss=loss,
        optimizer=optimizer,
        scheduler=scheduler,
        adversary=adversary,
        step_model=model,
        store_data=with_data and is_store(cfg.dataset_folder),
    )


def distribute(run: TrainingRun) -> None:
    """Wrap for DDP when distributed and compile the training steps (--compile), after any
    resume: DDP broadcasts rank 0's weights when it wraps."""
    step_model: nn.Module = run.model
    if run.world_size > 1:
        step_model = wrap_ddp(run.model, run.device)
        if run.adversary is not None:
            run.adversary.ddp = wrap_ddp(run.adversary.module, run.device)
    # Only the training steps run compiled: evaluation would compile graphs of its own for a
    # small share of the time, and PyTorch's fused inference path of the encoder layers fails
    # under compile (a fake-kernel stride error in torch 2.14).
    if run.cfg.compile:
        keep_spread_out_of_compiled_graphs()
        step_model = torch.compile(step_model)
    run.step_model = step_model
