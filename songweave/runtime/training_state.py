"""What a training run keeps in its checkpoints and how it continues from them: the progress
record, the checkpoint's contents, restoring them into a model and optimizer, which checkpoint
``--resume auto`` continues from, and whether a mid-epoch checkpoint fits this run's layout.
The file format itself (atomic writes, checksums, verified loads) is runtime/checkpoint.py.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from songweave.runtime.checkpoint import (
    BEST_NAME,
    EPOCH_PATTERN,
    FORMAT_VERSION,
    LAST_NAME,
    CheckpointError,
    CheckpointVersionError,
    load_checkpoint,
    refuse_nonfinite_weights,
    require_keys,
    verify_checkpoint_file,
)

log = logging.getLogger(__name__)


RESUME_KEYS = ("model_state_dict", "optimizer_state_dict", "epoch")


@dataclass(frozen=True)
class SkippedCheckpoint:
    path: Path
    reason: str  # one line, without the path


@dataclass(frozen=True)
class ResumeChoice:
    """What ``--resume auto`` continues from, and which checkpoints it passed over and why."""

    path: Path
    epoch: int  # epochs completed in that checkpoint
    batches_done: int  # batches of the next epoch already done (a mid-epoch stop)
    skipped: tuple[SkippedCheckpoint, ...] = ()

    def describe(self) -> str:
        partial = f" + {self.batches_done} batch(es)" if self.batches_done else ""
        text = f"continuing from {self.path} (epoch {self.epoch}{partial})"
        if self.skipped:
            text += "; skipped " + "; ".join(
                f"{item.path.name} ({item.reason})" for item in self.skipped
            )
        return text


def _reason(error: BaseException, path: Path) -> str:
    text = str(error)
    for prefix in (f"{path}: ", f"checkpoint not found: {path}"):
        if text.startswith(prefix):
            return text[len(prefix) :] or "not found"
    return text


def _progress_of(path: Path) -> tuple[int, int, int]:
    """(epoch, batches_done, global_step) read from the pickle alone: tensors are mmapped and
    never read, so this is cheap even for large checkpoints. Not an integrity check."""
    state = load_checkpoint(path, map_location="cpu", mmap=True, verify=False)
    require_keys(state, RESUME_KEYS, path)
    return (
        int(state["epoch"]),
        int(state.get("batches_done", 0) or 0),
        int(state.get("global_step", 0) or 0),
    )


def find_resume_checkpoint(directory: str | os.PathLike) -> ResumeChoice | None:
    """The newest intact checkpoint in ``directory`` for ``--resume auto``.

    Candidates are checkpoint_last.pth, checkpoint_best.pth and every checkpoint_epoch_N.pth,
    ordered by the progress stored inside them (epoch, batches done, step); on a tie last comes
    before best before the epoch copies. The first one whose checksums verify and which holds
    a training state is taken; ``ResumeChoice.describe()`` says which and why others were
    skipped, in one line for the launcher to log (a warning when ``skipped`` is not empty).
    None when the folder holds no checkpoint (a fresh start). When
    checkpoints exist but none is usable, raises CheckpointError listing why: silently starting
    from scratch would throw away a long run.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    named = [directory / LAST_NAME, directory / BEST_NAME]
    epochs = sorted(
        (
            (int(m.group(1)), child)
            for child in directory.iterdir()
            if (m := EPOCH_PATTERN.match(child.name))
        ),
        reverse=True,
    )
    candidates = [p for p in named if p.exists()] + [p for _, p in epochs]
    if not candidates:
        return None
    skipped: list[SkippedCheckpoint] = []
    ranked = []
    for preference, candidate in enumerate(candidates):
        try:
            progress = _progress_of(candidate)
        except CheckpointVersionError:
            raise
        except (CheckpointError, FileNotFoundError) as error:
            skipped.append(SkippedCheckpoint(candidate, _reason(error, candidate)))
            continue
        ranked.append((progress, -preference, candidate))
    for progress, _, candidate in sorted(ranked, reverse=True):
        try:
            if not verify_checkpoint_file(candidate):
                log.debug("%s has no stored checksums (older format): not verified", candidate)
        except CheckpointError as error:
            skipped.append(SkippedCheckpoint(candidate, _reason(error, candidate)))
            continue
        return ResumeChoice(candidate, progress[0], progress[1], tuple(skipped))
    shown = "; ".join(f"{item.path.name}: {item.reason}" for item in skipped[:3])
    more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
    raise CheckpointError(f"no intact checkpoint in {directory}: {shown}{more}")


@dataclasses.dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0  # completed epochs
    batches_done: int = 0  # batches already trained in epoch `epoch` (mid-epoch stop)
    global_step: int = 0  # batches trained so far, skipped ones included
    samples_consumed: int = 0  # samples trained so far over all ranks (a song store's position)
    best_val_loss: float = float("inf")
    best_epoch: int = 0
    epochs_without_improvement: int = 0


def build_checkpoint(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler_state: dict[str, Any],
    progress: Progress,
    train_config: dict[str, Any],
    rng_states: list[dict[str, Any]],
    partial_epoch: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint of a training run: ``model`` is the plain model (no DDP/compile wrapper);
    ``rng_states`` holds every rank's RNG state in rank order; ``extra`` adds entries (the
    adversary's)."""
    state = {
        "format_version": FORMAT_VERSION,
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
        "scheduler_state_dict": scheduler_state,
        **dataclasses.asdict(progress),
        "model_config": dict(getattr(model, "config", {})),
        "train_config": dict(train_config),
        "rng_state": rng_states[0],
        "rng_states": rng_states,
        "partial_epoch": partial_epoch,
        "world_size": len(rng_states),
        "torch_version": torch.__version__,
    }
    state.update(extra or {})
    return state


def check_model_config(
    path: str | os.PathLike, state: dict[str, Any], model_config: dict[str, Any]
) -> None:
    """One line naming the first model setting that differs between a checkpoint and the model
    built from the current flags."""
    saved = state.get("model_config") or {}
    different = sorted(
        k for k in set(saved) | set(model_config) if saved.get(k) != model_config.get(k)
    )
    if saved and different:
        key = different[0]
        raise CheckpointError(
            f"{path} was trained with {key}={saved.get(key)!r}, these flags give "
            f"{model_config.get(key)!r} (and {len(different) - 1} more difference(s)): pass the "
            f"same model flags to resume"
        )


def restore_training_state(
    path: str | os.PathLike,
    state: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    progress: Progress,
) -> None:
    """Weights, optimizer and progress from a loaded checkpoint (in place)."""
    check_model_config(path, state, dict(getattr(model, "config", {})))
    refuse_nonfinite_weights(path, state)
    try:
        model.load_state_dict(state["model_state_dict"])
        optimizer.load_state_dict(state["optimizer_state_dict"])
    except (RuntimeError, ValueError, KeyError) as error:
        raise CheckpointError(
            f"{path}: does not fit this model/optimizer ({str(error).splitlines()[0]})"
        ) from None
    for item in dataclasses.fields(Progress):
        if item.name in state:
            setattr(progress, item.name, type(getattr(progress, item.name))(state[item.name]))


def check_resume_fits(
    path: str | os.PathLike,
    state: dict[str, Any],
    batch_size: int,
    world_size: int,
    any_layout: bool = False,
) -> None:
    """A checkpoint of a pair folder written mid-epoch continues its epoch only with the batch
    size and process count that wrote it: another batch size would skip or repeat samples,
    another world size has no RNG state per rank. One line naming both values; an end-of-epoch
    checkpoint resumes with any. ``any_layout``: the data is a song store, whose sequence
    continues from the samples consumed at any batch size and world size."""
    if any_layout or not int(state.get("batches_done", 0) or 0):
        return
    saved_batch = (state.get("train_config") or {}).get("batch_size")
    if isinstance(saved_batch, int) and saved_batch != batch_size:
        raise CheckpointError(
            f"{path} stopped mid-epoch with --batch_size {saved_batch}; this run has "
            f"--batch_size {batch_size}: resume with --batch_size {saved_batch}, or from an "
            f"end-of-epoch checkpoint (checkpoint_epoch_N.pth)"
        )
    saved_world = state.get("world_size")
    if isinstance(saved_world, int) and saved_world != world_size:
        raise CheckpointError(
            f"{path} stopped mid-epoch with {saved_world} process(es); this run has "
            f"{world_size}: resume with --world_size {saved_world}, or from an end-of-epoch "
            f"checkpoint (checkpoint_epoch_N.pth)"
        )
