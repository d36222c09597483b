"""Everything that spans processes: devices, the process group, DDP, samplers, stop signals,
the per-step agreement between ranks, and leaving together.

Ranks stay in lock step without host syncs inside a step: a non-finite loss or gradient is agreed
on with one tiny all-reduce and skipped on the device (fused AdamW's ``found_inf``); stop requests
(SIGTERM, SIGUSR1, Ctrl-C) ride on the same all-reduce and are read every ``sync_every`` steps.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import os
import shutil
import signal
import subprocess
from datetime import timedelta
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler, Sampler

from songweave.runtime.cli import TRUE_WORDS
from songweave.runtime.rng_state import capture_rng_state

log = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    """Training cannot continue: the loss stays non-finite, or the weights became non-finite."""


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


def pick_device(device_flag: str, local_rank: int = 0) -> torch.device:
    """--device auto/cpu/cuda -> this rank's device; ValueError (one line) for cuda without
    one."""
    if device_flag == "cpu" or (device_flag == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if device_flag not in ("auto", "cuda"):
        raise ValueError(f"--device {device_flag}: choose auto, cpu or cuda")
    if not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    # One GPU per rank: cuda:LOCAL_RANK, or cuda:0 where the scheduler shows each task only its
    # own GPU (CUDA_VISIBLE_DEVICES per task).
    index = local_rank if local_rank < torch.cuda.device_count() else 0
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def init_distributed(rank: int, world_size: int, device: torch.device, timeout_s: float) -> None:
    """env:// rendezvous (MASTER_ADDR/PORT). The timeout bounds every collective, so a rank
    whose peer died fails instead of waiting forever."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs: dict[str, Any] = {}
    if device.type == "cuda":
        kwargs["device_id"] = device
    dist.init_process_group(
        backend, rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout_s), **kwargs
    )


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world_size() -> tuple[int, int]:
    if is_distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def wrap_ddp(model: nn.Module, device: torch.device) -> DistributedDataParallel:
    """DDP without per-forward buffer broadcasts (the model's buffers are constants) and without
    the unused-parameter search (every trainable parameter takes part in the loss)."""
    options: dict[str, Any] = {"find_unused_parameters": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        options["forward_sync_buffers"] = False
    else:  # older torch
        options["broadcast_buffers"] = False
    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, **options
    )


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside torch.compile's and DDP's wrappers."""
    model = getattr(model, "_orig_mod", model)
    return model.module if isinstance(model, DistributedDataParallel) else model


class ResumableDistributedSampler(DistributedSampler):
    """DistributedSampler (order = f(seed, epoch)) that can start part-way into an epoch.

    After a mid-epoch stop, ``set_start(n)`` skips the n samples this rank already trained on,
    without loading them.
    """

    def __init__(
        self, dataset: Dataset, num_replicas: int, rank: int, shuffle: bool = True, seed: int = 0
    ) -> None:
        super().__init__(
            dataset,
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=False,
        )
        self.start = 0

    def set_start(self, start: int) -> None:
        self.start = max(0, int(start))

    def position(self, epoch: int, steps_done: int, batch_size: int, samples_consumed: int) -> None:
        """Where the next iteration starts: epoch ``epoch``, ``steps_done`` batches into it (the
        pair order is a function of the epoch; ``samples_consumed`` is not needed)."""
        self.set_epoch(epoch)
        self.set_start(steps_done * batch_size)

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
            [self.flags[1], self.flags[2], self.max_streak, self.nonfinite]
        ).tolist()
        self.max_streak = self.streak.clone()
        if nonfinite > self.reported_nonfinite:
            log.warning(
                "skipped %d step(s) with a non-finite loss or gradient (%d in total, %s)",
                int(nonfinite) - self.reported_nonfinite,
                int(nonfinite),
                where,
            )
            self.reported_nonfinite = int(nonfinite)
        if max_streak >= self.max_nonfinite_steps:
            raise NonFiniteError(
                f"loss or gradients non-finite for {int(max_streak)} steps in a row ({where}); "
                f"stopping (no checkpoint written from this state). Try a lower --lr, "
                f"--precision fp32 or a smaller --grad_clip, and resume from the last checkpoint"
            )
        return stop > 0, requeue > 0


def gather_rng_states() -> list[dict[str, Any]]:
    """Every rank's RNG state, in rank order (collective when distributed)."""
    state = capture_rng_state()
    if not is_distributed():
        return [state]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, state)
    return gathered


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


def requeue_slurm_job(requested: bool) -> None:
    """`scontrol requeue $SLURM_JOB_ID` when asked to (--requeue or REQUEUE=1) and possible."""
    job_id = os.environ.get("SLURM_JOB_ID")
    wanted = requested or os.environ.get("REQUEUE", "").strip().lower() in TRUE_WORDS
    if not (wanted and job_id):
        return
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        log.warning("requeue requested but scontrol is not on PATH: job %s not requeued", job_id)
        return
    result = subprocess.run(
        [scontrol, "requeue", job_id], capture_output=True, text=True, timeout=60
    )
    if result.returncode == 0:
        log.info("requeued SLURM job %s: it resumes from its last checkpoint", job_id)
    else:
        log.warning("scontrol requeue %s failed: %s", job_id, result.stderr.strip())
