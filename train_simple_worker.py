"""The training worker: one process per device, started by train_simple_ddp.py, torchrun or srun.

``train_worker`` sets up the process and calls ``run_training``, which reads top to bottom: build
the run (songweave/train/setup.py), resume, then per epoch: train, validate, log, checkpoint. Where
the other concerns live: the configuration in songweave/train/config.py, processes and signals in
songweave/runtime/distributed.py, the loss in songweave/train/losses.py, the discriminator in
songweave/train/adversary.py, logs in songweave/train/log.py, checkpoint files in
songweave/runtime/checkpoint.py."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from songweave.data.store_windows import steps_done_in_new_layout
from songweave.runtime.checkpoint import (
    LAST_NAME,
    load_checkpoint,
    require_keys,
    save_checkpoint,
    save_training_checkpoints,
)
from songweave.runtime.cli import setup_logging
from songweave.runtime.cpu_runtime import share_cores, tune_malloc
from songweave.runtime.distributed import (
    NonFiniteError,
    StepSync,
    StopRequest,
    gather_rng_states,
    init_distributed,
    leave_together,
    pick_device,
    rank_and_world_size,
    requeue_slurm_job,
    unwrap,
)
from songweave.runtime.launch_env import processes_on_this_machine
from songweave.runtime.precision import autocast_for
from songweave.runtime.rng_state import restore_rng_state
from songweave.runtime.training_state import (
    RESUME_KEYS,
    Progress,
    build_checkpoint,
    check_resume_fits,
    restore_training_state,
)
from songweave.train.adversary import discriminator_step, real_songs
from songweave.train.config import TrainConfig, config_from_dict
from songweave.train.log import (
    MetricsLog,
    MetricSums,
    bar_postfix,
    epoch_record,
    means,
    reduce_metric_sums,
    summary_line,
)
from songweave.train.losses import LossBreakdown, TrainingLoss
from songweave.train.optimization import optimizer_step
from songweave.train.setup import (
    TrainingRun,
    build_run,
    distribute,
    epoch_seed,
    seed_everything,
    to_device,
)
from songweave.train.tracking import collect_samples, sample_indices

log = logging.getLogger(__name__)

# Validation pairs logged to TensorBoard each epoch, and how much of each.
LISTENING_PAIRS = 4
LISTENING_SECONDS = 4.0


@dataclass
class EpochOutcome:
    sums: MetricSums
    steps: int
    elapsed_s: float
    stopped: bool = False
    requeue: bool = False


@dataclass
class RunEnd:
    """How the epoch loop ended."""

    stopped_by_signal: bool = False
    requeue: bool = False
    early_stopped: bool = False


# ============================================================================================
# The process
# ============================================================================================


def train_worker(
    rank: int, world_size: int, args: TrainConfig | dict[str, Any]
) -> dict[str, Any] | None:
    """Entry point of one training process (torch.multiprocessing, torchrun or srun).

    Returns a small summary on rank 0 (None elsewhere). Raises on failure: the launcher turns
    that into a non-zero exit of the whole job.
    """
    cfg = args if isinstance(args, TrainConfig) else config_from_dict(args)
    local_rank = int(os.environ.get("LOCAL_RANK", rank)) if world_size > 1 else 0
    setup_logging(rank)
    tune_malloc()  # spawned ranks do not inherit the launcher's malloc settings
    stop = StopRequest()
    stop.install()
    try:
        device = pick_device(cfg.device, local_rank)
        if device.type == "cpu":
            share_cores(processes_on_this_machine(world_size))
        if world_size > 1:
            init_distributed(rank, world_size, device, cfg.dist_timeout)
        return run_training(cfg, rank, world_size, device, stop)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        stop.uninstall()  # matters when called in-process (tests, notebooks)


def run_training(
    cfg: TrainConfig, rank: int, world_size: int, device: torch.device, stop: StopRequest
) -> dict[str, Any] | None:
    # ---- build everything, resume, then wrap for DDP / compile
    run = build_run(cfg, rank, world_size, device)
    progress, resumed = resume(run)
    distribute(run)
    folder = Path(cfg.checkpoint_dir)
    metrics_log = MetricsLog(
        folder,
        enabled=rank == 0,
        resumed_epoch=progress.epoch if resumed else None,
        tensorboard=cfg.tensorboard,
    )
    announce(run)
    if resumed is None:
        log_initial_validation(run, metrics_log)

    sync = StepSync(device, cfg.max_nonfinite_steps)
    end = RunEnd()
    try:
        while progress.epoch < cfg.epochs:
            # ---- one epoch of training (possibly the rest of a resumed one)
            sums, rng_state, elapsed_before = start_epoch(run, progress, resumed)
            resumed = None
            metrics_log.reset_interval()
            outcome = train_epoch(
                run,
                run.train_loader,
                progress,
                stop,
                sync,
                sums=sums,
                rng_state=rng_state,
                on_interval=lambda reduced: metrics_log.interval(reduced, progress.global_step),
            )
            elapsed = elapsed_before + outcome.elapsed_s
            if outcome.stopped and progress.batches_done < run.steps_per_epoch:
                save_partial_epoch(run, progress, outcome, elapsed)
                end = RunEnd(stopped_by_signal=True, requeue=outcome.requeue)
                break

            # ---- validate, log, checkpoint
            finish_epoch(run, progress, outcome, elapsed, metrics_log)
            if cfg.patience and progress.epochs_without_improvement >= cfg.patience:
                if rank == 0:
                    log.info(
                        "early stopping: no validation improvement for %d epoch(s); best "
                        "epoch %d (val loss %.5g)",
                        cfg.patience,
                        progress.best_epoch,
                        progress.best_val_loss,
                    )
                end = RunEnd(early_stopped=True)
                break
            if outcome.stopped:
                if rank == 0:
                    log.warning(
                        "stopped by signal after epoch %d: %s written; continue with --resume auto",
                        progress.epoch,
                        folder / LAST_NAME,
                    )
                end = RunEnd(stopped_by_signal=True, requeue=outcome.requeue)
                break
    finally:
        metrics_log.close()
    return finish_run(run, progress, end)


# ============================================================================================
# Before the first epoch
# ============================================================================================


def resume(run: TrainingRun) -> tuple[Progress, dict[str, Any] | None]:
    """Progress from --resume's checkpoint (weights, optimizer, schedule, discriminator restored
    in place), or a fresh Progress. Returns the loaded checkpoint for the RNG and partial-epoch
    state, None on a fresh start."""
    progress = Progress()
    path = run.cfg.resume
    if not path:
        return progress, None
    state = load_checkpoint(path, map_location="cpu")
    require_keys(state, RESUME_KEYS, path)
    check_resume_fits(path, state, run.cfg.batch_size, run.world_size, run.store_data)
    restore_training_state(path, state, run.model, run.optimizer, progress)
    relayout_partial_epoch(run, state, progress)
    if state.get("scheduler_state_dict"):
        run.scheduler.load_state_dict(state["scheduler_state_dict"])
    if run.adversary is not None:
        run.adversary.restore(path, state)
    elif "discriminator_state_dict" in state:
        log.info("%s holds a discriminator: not used (--gan_weight 0)", path)
    log.info(
        "resumed from %s: %d epoch(s) done%s, step %d, best val loss %.5g",
        path,
        progress.epoch,
        f" + {progress.batches_done} batch(es)" if progress.batches_done else "",
        progress.global_step,
        progress.best_val_loss,
    )
    return progress, state


def relayout_partial_epoch(run: TrainingRun, state: dict[str, Any], progress: Progress) -> None:
    """A song store's run stopped mid-epoch and resumed with another batch size or world size:
    the data continues from the samples consumed; the steps left in the epoch are recounted
    and the RNG states (dropout, masks), which belong to the old ranks, start afresh."""
    saved_batch = (state.get("train_config") or {}).get("batch_size")
    saved_world = state.get("world_size")
    if not progress.batches_done or not isinstance(saved_batch, int):
        return
    if not isinstance(saved_world, int):
        return
    if (saved_batch, saved_world) == (run.cfg.batch_size, run.world_size):
        return
    old = progress.batches_done
    progress.batches_done = steps_done_in_new_layout(
        len(run.train_set), saved_batch, saved_world, old, run.cfg.batch_size, run.world_size
    )
    log.warning(
        "resumed mid-epoch with batch %d x %d process(es) instead of %d x %d: the data continues "
        "at sample %d (%d of %d steps of this epoch count as done); the random state of "
        "dropout and masks starts afresh from (seed, epoch, rank)",
        run.cfg.batch_size,
        run.world_size,
        saved_batch,
        saved_world,
        progress.samples_consumed,
        progress.batches_done,
        run.steps_per_epoch,
    )


def announce(run: TrainingRun) -> None:
    """What is about to train, on rank 0."""
    if run.rank != 0:
        return
    cfg = run.cfg
    n_params = sum(p.numel() for p in run.model.parameters())
    log.info(
        "model: %.2fM parameters, %d stage(s); %d train / %d val pairs; %d process(es) on "
        "%s; %d steps per epoch",
        n_params / 1e6,
        cfg.num_transformer_layers,
        len(run.train_set),
        len(run.val_set) if run.val_set is not None else 0,
        run.world_size,
        run.device.type,
        run.steps_per_epoch,
    )
    if cfg.use_creative_agent:
        log.info("Creative Agent ENABLED (mask_reg_weight=%g)", cfg.mask_reg_weight)
        if cfg.agent_hold_epochs:
            log.info(
                "the agent keeps its initial weights for the first %d epoch(s)",
                cfg.agent_hold_epochs,
            )
    if cfg.compile:
        log.info("torch.compile: the training steps run compiled (the first steps compile)")
    if run.adversary is not None:
        log.info(
            "Adversarial training ENABLED (gan_weight=%g): discriminator %.2fM parameters, "
            "lr %g, updated every %d step(s)",
            cfg.gan_weight,
            sum(p.numel() for p in run.adversary.module.parameters()) / 1e6,
            cfg.disc_lr,
            cfg.disc_update_freq,
        )


def log_initial_validation(run: TrainingRun, metrics_log: MetricsLog) -> None:
    """Epoch 0: the untrained model, so curves start where training starts."""
    initial = validate(run)
    if run.rank == 0:
        record = epoch_record(
            0, None, {}, initial, run.scheduler.get_last_lr()[0], 0.0, run.world_size
        )
        metrics_log.write(record)
        log.info(summary_line(record, run.cfg.epochs, improved=False))
        log_listening_samples(run, metrics_log, 0)


def start_epoch(
    run: TrainingRun, progress: Progress, resumed: dict[str, Any] | None
) -> tuple[MetricSums, dict[str, Any] | None, float]:
    """Position data order and randomness for epoch ``progress.epoch`` (functions of seed, epoch
    and rank only); after a mid-epoch stop, also the sums, RNG state and time already spent."""
    cfg, epoch = run.cfg, progress.epoch
    seed_everything(epoch_seed(cfg.seed, epoch, run.rank))
    run.train_sampler.position(
        epoch, progress.batches_done, cfg.batch_size, progress.samples_consumed
    )
    run.train_set.set_epoch(epoch)
    sums = MetricSums(run.device)
    if resumed is None or not progress.batches_done:
        return sums, None, 0.0
    partial = resumed.get("partial_epoch") or {}
    sums.load(partial.get("sums", {}), keep_values=run.rank == 0)
    rng_states = resumed.get("rng_states") or []
    rng_state = rng_states[run.rank] if len(rng_states) == run.world_size else None
    return sums, rng_state, float(partial.get("elapsed_s", 0.0))


# ============================================================================================
# One step, one epoch, validation
# ============================================================================================


def forward_and_loss(
    model: nn.Module,
    batch: dict[str, Any],
    loss: TrainingLoss,
    precision: str,
    adversarial: bool = True,
) -> tuple[Tensor, LossBreakdown, dict[str, Tensor]]:
    """The model on one batch and its loss: (output latents, loss breakdown, mask figures)."""
    with autocast_for(batch["input_latent"].device, precision):
        output, mask_reg_loss, record = model(
            batch["input_latent"], batch["target_latent"], return_record=True
        )
    # Losses always in fp32 (ReconstructionLoss also disables autocast inside).
    masks = None if record.input_mask is None else (record.input_mask, record.target_mask)
    breakdown = loss(output.float(), batch, mask_reg_loss, adversarial=adversarial, masks=masks)
    figures = dict(record.statistics)
    figures.update(
        {
            f"reg_{name}": value
            for name, value in record.regularizer_terms.items()
            if name != "reg_loss"
        }
    )
    return output.float(), breakdown, figures


def held_agent_parameters(model: nn.Module, epoch: int, hold_epochs: int) -> list[nn.Parameter]:
    """The mask generator's parameters while epoch (0-based) < hold_epochs, else none.

    Early on the cascade cannot inpaint anything yet, so the gradient it sends the agent rewards
    masks that suit an untrained cascade; holding the agent lets the cascade learn on the agent's
    initial masks (with a loudness prior, the louder-song rule) before the agent moves.
    """
    agent = getattr(model, "creative_agent", None)
    if agent is None or epoch >= hold_epochs:
        return []
    return [p for p in agent.mask_generator.parameters() if p.requires_grad]


def train_epoch(
    run: TrainingRun,
    loader: Any,
    progress: Progress,
    stop: StopRequest,
    sync: StepSync,
    sums: MetricSums | None = None,
    rng_state: dict[str, Any] | None = None,
    on_interval: Callable[[dict[str, tuple[float, float]]], None] | None = None,
) -> EpochOutcome:
    """Train over ``loader`` (already positioned for this epoch) until it ends,
    ``run.steps_per_epoch`` batches of the epoch are done, or all ranks agree to stop.
    Updates ``progress`` in place."""
    cfg, device, adversary = run.cfg, run.device, run.adversary
    run.step_model.train()
    sums = sums or MetricSums(device)
    rank, world_size = rank_and_world_size()
    iterator = iter(loader)
    if rng_state is not None:
        # Restored after the iterator exists: creating it draws from the RNG in a straight run
        # too, before the point where this state was captured.
        restore_rng_state(rng_state)
    max_steps = run.steps_per_epoch
    tty = os.isatty(2)
    # In a log file (SLURM) the bar updates every 30 s and keeps its last state on its own line.
    bar = tqdm(
        total=max_steps,
        initial=progress.batches_done,
        disable=rank != 0,
        leave=not tty,
        desc=f"epoch {progress.epoch + 1}/{cfg.epochs}",
        dynamic_ncols=True,
        mininterval=1.0 if tty else 30.0,
    )
    parameters = [p for p in run.model.parameters() if p.requires_grad]
    held = held_agent_parameters(run.model, progress.epoch, cfg.agent_hold_epochs)
    max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
    one = torch.ones((), device=device)
    start, steps, stopped, requeue = time.perf_counter(), 0, False, False
    while progress.batches_done < max_steps:
        batch = next(iterator, None)
        if batch is None:
            break
        if (
            cfg.fail_at_step >= 0
            and progress.global_step == cfg.fail_at_step
            and rank == world_size - 1
        ):
            raise RuntimeError(
                f"injected failure at step {cfg.fail_at_step} on rank {rank} (--fail_at_step)"
            )
        batch = to_device(batch, device)
        batch_size = int(batch["input_latent"].shape[0])

        # ---- forward, backward, agreed update
        output, breakdown, figures = forward_and_loss(
            run.step_model, batch, run.loss, cfg.precision
        )
        breakdown.total.backward()
        for parameter in held:
            # Without a gradient AdamW leaves a weight alone: no update, no decay, no moments.
            parameter.grad = None
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
        found_inf = sync.agree(breakdown.total, grad_norm, stop)
        optimizer_step(run.optimizer, found_inf)
        run.optimizer.zero_grad(set_to_none=True)
        run.scheduler.step()
        values = {**breakdown.terms, **figures}
        if adversary is not None and progress.global_step % adversary.update_every == 0:
            # After the generator's backward: updating the discriminator in place earlier would
            # invalidate the weights the generator loss was computed with.
            values.update(
                discriminator_step(
                    adversary, real_songs(batch, cfg.objective), output, cfg.precision
                )
            )

        # ---- bookkeeping: a skipped step contributes no loss figures
        sums.add(values, weight=(1.0 - found_inf) * batch_size)
        sums.add({"grad_norm": grad_norm}, weight=1.0 - found_inf)
        sums.add({"samples": one}, weight=batch_size)
        sums.add({"nonfinite_steps": one}, weight=found_inf)
        progress.batches_done += 1
        progress.global_step += 1
        progress.samples_consumed += batch_size * world_size
        steps += 1
        bar.update(1)
        if progress.global_step % cfg.log_every == 0:
            reduced = sums.reduce()  # collective: every rank reaches this at the same step
            if rank == 0:
                bar.set_postfix(bar_postfix(means(reduced)))
                if on_interval is not None:
                    on_interval(reduced)
        # Reading the agreed flags costs a device sync on GPUs only; on CPU read them every step,
        # so a stop signal never waits for slow steps to add up.
        if device.type == "cpu" or progress.global_step % cfg.sync_every == 0:
            stopped, requeue = sync.poll(f"epoch {progress.epoch + 1}, step {progress.global_step}")
            if stopped:
                break
    bar.close()
    if not stopped:
        stopped, requeue = sync.poll(f"end of epoch {progress.epoch + 1}")
    return EpochOutcome(
        sums=sums,
        steps=steps,
        elapsed_s=time.perf_counter() - start,
        stopped=stopped,
        requeue=requeue,
    )


@torch.no_grad()
def validate(run: TrainingRun) -> dict[str, float]:
    """Mean losses and mask figures over the whole validation split, all ranks (collective).

    Runs the plain model (no DDP collectives), so ranks may hold different batch counts.
    """
    sums = MetricSums(run.device)
    if run.val_loader is not None:
        model = run.model
        was_training = model.training
        model.eval()
        for index, batch in enumerate(run.val_loader):
            if run.cfg.max_val_batches and index >= run.cfg.max_val_batches:
                break
            batch = to_device(batch, run.device)
            _, breakdown, figures = forward_and_loss(
                model, batch, run.loss, run.cfg.precision, adversarial=False
            )
            sums.add({**breakdown.terms, **figures}, weight=int(batch["input_latent"].shape[0]))
        model.train(was_training)
    return reduce_metric_sums(sums, sync_names=True)


# ============================================================================================
# After an epoch: bookkeeping and checkpoints
# ============================================================================================


def finish_epoch(
    run: TrainingRun,
    progress: Progress,
    outcome: EpochOutcome,
    elapsed: float,
    metrics_log: MetricsLog,
) -> None:
    """Validate, score, log and checkpoint a completed epoch (collective)."""
    train_reduced = outcome.sums.reduce(sync_names=True)
    train_means = means(train_reduced)
    train_totals = {k: w for k, (_, w) in train_reduced.items()}
    val = validate(run)
    epoch = progress.epoch + 1
    progress.epoch, progress.batches_done = epoch, 0
    score = val.get("loss", train_means.get("loss", math.inf))
    improved = math.isfinite(score) and score < progress.best_val_loss
    if improved:
        progress.best_val_loss, progress.best_epoch = score, epoch
        progress.epochs_without_improvement = 0
    else:
        progress.epochs_without_improvement += 1
    run.scheduler.step_epoch(score)
    record = epoch_record(
        epoch,
        train_means,
        train_totals,
        val,
        run.scheduler.get_last_lr()[0],
        elapsed,
        run.world_size,
    )
    check_finite_weights(run, f"end of epoch {epoch}")
    rng_states = gather_rng_states()
    if run.rank == 0:
        metrics_log.write(record)
        if "mask_reg_loss" in train_means:
            log.info(
                "Creative Agent mask regularization loss: %.6f (weight=%g)",
                train_means["mask_reg_loss"],
                run.cfg.mask_reg_weight,
            )
        log.info(summary_line(record, run.cfg.epochs, improved))
        save_epoch_checkpoints(run, progress, rng_states, improved)
        log_listening_samples(run, metrics_log, epoch)


def log_listening_samples(run: TrainingRun, metrics_log: MetricsLog, epoch: int) -> None:
    """Input, target, masked mix and output of a few fixed validation pairs, with their masks,
    to TensorBoard (rank 0, after the epoch's checkpoint is safe)."""
    if not metrics_log.tracker.enabled:
        return
    dataset = run.val_set if run.val_set is not None else run.train_set
    indices = sample_indices(len(dataset), LISTENING_PAIRS)
    metrics_log.samples(
        epoch,
        collect_samples(run.model, run.codec, dataset, indices, max_seconds=LISTENING_SECONDS),
    )


def save_epoch_checkpoints(
    run: TrainingRun, progress: Progress, rng_states: list[dict[str, Any]], improved: bool
) -> None:
    """checkpoint_best (when improved) and checkpoint_epoch_N (every --save_every) first,
    checkpoint_last last, so last never names a best epoch that is not on disk."""
    every = run.cfg.save_every
    save_training_checkpoints(
        run.cfg.checkpoint_dir,
        checkpoint_of(run, progress, rng_states),
        best=improved,
        epoch_copy=progress.epoch if every and progress.epoch % every == 0 else None,
    )


def save_partial_epoch(
    run: TrainingRun, progress: Progress, outcome: EpochOutcome, elapsed: float
) -> None:
    """Stopped mid-epoch: save where we are; a resume continues this epoch (collective)."""
    reduced = outcome.sums.reduce(sync_names=True)
    check_finite_weights(run, f"epoch {progress.epoch + 1}")
    rng_states = gather_rng_states()
    if run.rank != 0:
        return
    folder = Path(run.cfg.checkpoint_dir)
    partial = {"sums": {k: list(v) for k, v in reduced.items()}, "elapsed_s": elapsed}
    save_checkpoint(folder / LAST_NAME, checkpoint_of(run, progress, rng_states, partial))
    log.warning(
        "stopped by signal in epoch %d after %d batch(es): wrote %s; continue with --resume auto",
        progress.epoch + 1,
        progress.batches_done,
        folder / LAST_NAME,
    )


def checkpoint_of(
    run: TrainingRun,
    progress: Progress,
    rng_states: list[dict[str, Any]],
    partial_epoch: dict[str, Any] | None = None,
) -> dict[str, Any]:
    extra = run.adversary.checkpoint_entries() if run.adversary is not None else None
    return build_checkpoint(
        run.model,
        run.optimizer,
        run.scheduler.state_dict(),
        progress,
        dataclasses.asdict(run.cfg),
        rng_states,
        partial_epoch,
        extra,
    )


def check_finite_weights(run: TrainingRun, where: str) -> None:
    """Weights are identical on all ranks, so every rank reaches the same verdict."""
    modules = [("model", unwrap(run.model))]
    if run.adversary is not None:
        modules.append(("discriminator", run.adversary.module))
    for kind, module in modules:
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise NonFiniteError(
                    f"{kind} weight {name} became non-finite ({where}); not "
                    f"writing a checkpoint. Resume from the last one with a "
                    f"lower --lr" + (" / --disc_lr" if kind != "model" else "")
                )


def finish_run(run: TrainingRun, progress: Progress, end: RunEnd) -> dict[str, Any] | None:
    """Requeue when asked, leave together, and summarize on rank 0."""
    folder = Path(run.cfg.checkpoint_dir)
    if end.stopped_by_signal and end.requeue and run.rank == 0:
        requeue_slurm_job(run.cfg.requeue)
    leave_together()
    if run.rank != 0:
        return None
    if not end.stopped_by_signal and not end.early_stopped:
        log.info(
            "training finished: %d epoch(s), best epoch %d (val loss %.5g); checkpoints in %s",
            progress.epoch,
            progress.best_epoch,
            progress.best_val_loss,
            folder,
        )
    return {
        "epoch": progress.epoch,
        "best_val_loss": progress.best_val_loss,
        "best_epoch": progress.best_epoch,
        "stopped_by_signal": end.stopped_by_signal,
        "early_stopped": end.early_stopped,
        "checkpoint_dir": str(folder),
    }
