"""Checkpoints that survive anything: plain types, atomic writes, loads that never run code.

A checkpoint is a dict of plain values (tensors, dicts, lists, tuples, numbers, strings, None),
so ``torch.load(path)`` works with ``weights_only=True`` and loading never executes pickled code.
It is written to a temporary file in the same folder, flushed and fsynced, then renamed over the
destination with ``os.replace``: a crash (or a SIGKILL) mid-write leaves either the old file or the
new one, never half of one.

Public API:
    save_checkpoint(path, state)            atomic write, plain types only, finite weights only
    load_checkpoint(path, map_location)     weights_only load; CheckpointError names the file
    find_resume_checkpoint(directory)       for ``--resume auto``
    capture_rng_state() / restore_rng_state(state)
    build_checkpoint / restore_training_state / copy_checkpoint   a training run's checkpoints
    CheckpointError
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

LAST_NAME = "checkpoint_last.pth"
BEST_NAME = "checkpoint_best.pth"
EPOCH_PATTERN = re.compile(r"^checkpoint_epoch_(\d+)\.pth$")

# Keys whose tensors must be finite before anything is written (a NaN model is never saved).
WEIGHT_KEYS = ("model_state_dict", "discriminator_state_dict")


class CheckpointError(ValueError):
    """A checkpoint cannot be written or read; the message is one line and names the file."""


def epoch_checkpoint_name(epoch: int) -> str:
    return f"checkpoint_epoch_{epoch}.pth"


# --------------------------------------------------------------------------------------------
# Plain types
# --------------------------------------------------------------------------------------------

def to_plain(obj: Any, where: str = "state") -> Any:
    """Convert ``obj`` into types ``torch.load(weights_only=True)`` accepts, or raise.

    Dataclasses become dicts, paths become strings, numpy arrays become tensors and numpy
    scalars become Python numbers. Anything else that is not plain is refused here, at save
    time, rather than discovered later when the file cannot be loaded.
    """
    if obj is None or type(obj) in (bool, int, float, str):
        return obj
    # Subclasses (torch.__version__ is a TorchVersion, IntEnum, ...) would pickle as their class.
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, int) and not isinstance(obj, enum.Enum):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_plain(dataclasses.asdict(obj), where)
    if isinstance(obj, enum.Enum):
        return to_plain(obj.value, where)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, torch.device):
        return str(obj)
    if isinstance(obj, torch.dtype):
        return str(obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj)).clone()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise CheckpointError(f"{where}: dict key {key!r} is not a str or int")
            out[key] = to_plain(value, f"{where}[{key!r}]")
        return out
    if isinstance(obj, tuple):
        return tuple(to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj))
    if isinstance(obj, list):
        return [to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise CheckpointError(
        f"{where}: {type(obj).__name__} is not a plain type (tensors, dicts, lists, numbers, "
        f"strings only)")


def first_nonfinite_tensor(tree: Any, where: str = "") -> str | None:
    """Name of the first floating tensor in ``tree`` holding NaN or Inf, else None."""
    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point() and not bool(torch.isfinite(tree).all()):
            return where or "tensor"
        return None
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        return None
    for key, value in items:
        found = first_nonfinite_tensor(value, f"{where}[{key!r}]" if where else str(key))
        if found is not None:
            return found
    return None


# --------------------------------------------------------------------------------------------
# Save / load
# --------------------------------------------------------------------------------------------

def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically to ``path`` (tmp file in the same folder, fsync, os.replace).

    Refuses (CheckpointError) non-plain values and non-finite weights under ``WEIGHT_KEYS``,
    before anything touches the destination.
    """
    path = Path(path)
    plain = to_plain(state)
    for key in WEIGHT_KEYS:
        if key in plain:
            bad = first_nonfinite_tensor(plain[key], key)
            if bad is not None:
                raise CheckpointError(f"refusing to write {path}: non-finite values in {bad}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder as the destination so os.replace is a rename on one file system.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            torch.save(plain, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (best effort: not every OS/file system allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _first_line(error: BaseException) -> str:
    """First sentence of an error message (torch's zip errors run on for several lines)."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    line = text.splitlines()[0]
    return line.split(". ")[0].rstrip(".")


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu",
                    mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (never runs code).

    Raises FileNotFoundError for a missing file and CheckpointError (one line naming the file)
    for a corrupted/truncated file, a file needing arbitrary pickled objects, or a non-dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        # torch reports refused globals as UnpicklingError("Weights only load failed ...").
        message = _first_line(error)
        if "weights only" in message.lower() or "weights_only" in message.lower():
            raise CheckpointError(
                f"{path}: refused to load: it needs arbitrary pickled objects, and checkpoints "
                f"are loaded with weights_only=True (plain tensors/dicts/lists/numbers/strings "
                f"only)") from None
        raise CheckpointError(f"{path}: corrupted or truncated checkpoint ({message})") from None
    except Exception as error:  # zip reader errors, EOFError, OSError on a truncated file ...
        raise CheckpointError(
            f"{path}: corrupted or truncated checkpoint ({type(error).__name__}: "
            f"{_first_line(error)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a checkpoint (top level is {type(state).__name__}, "
                              f"expected a dict)")
    return state


def require_keys(state: dict[str, Any], keys: tuple[str, ...], path: str | os.PathLike) -> None:
    missing = [key for key in keys if key not in state]
    if missing:
        raise CheckpointError(f"{path}: not a training checkpoint (missing {', '.join(missing)})")


RESUME_KEYS = ("model_state_dict", "optimizer_state_dict", "epoch")


def find_resume_checkpoint(directory: str | os.PathLike) -> Path | None:
    """Checkpoint to continue from in ``directory`` for ``--resume auto``.

    ``checkpoint_last.pth`` when it loads, else the newest loadable ``checkpoint_epoch_N.pth``.
    None when the folder holds no checkpoint (a fresh start). When checkpoints exist but none
    loads, raises CheckpointError naming the first one: silently starting from scratch would
    throw away a long run.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    candidates = []
    if (directory / LAST_NAME).exists():
        candidates.append(directory / LAST_NAME)
    epochs = []
    for child in directory.iterdir():
        match = EPOCH_PATTERN.match(child.name)
        if match:
            epochs.append((int(match.group(1)), child))
    candidates += [p for _, p in sorted(epochs, reverse=True)]
    errors: list[str] = []
    for candidate in candidates:
        try:
            # mmap avoids reading every weight just to validate the file.
            state = load_checkpoint(candidate, map_location="cpu", mmap=True)
            require_keys(state, RESUME_KEYS, candidate)
        except (CheckpointError, FileNotFoundError) as error:
            log.warning("skipping unusable checkpoint: %s", error)
            errors.append(str(error))
            continue
        return candidate
    if errors:
        raise CheckpointError(f"no usable checkpoint in {directory}: {errors[0]}")
    return None


# --------------------------------------------------------------------------------------------
# RNG state as plain tensors
# --------------------------------------------------------------------------------------------

def capture_rng_state() -> dict[str, Any]:
    """torch / cuda / numpy / python RNG states as plain values (tensors, ints, floats)."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(np_name), "keys": torch.from_numpy(np_keys.astype(np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss),
                  "cached_gaussian": float(np_gauss)},
        "python": {"version": int(py_version),
                   "internal": torch.tensor(py_internal, dtype=torch.int64),
                   "gauss_next": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of capture_rng_state (missing parts are left alone)."""
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    if "numpy" in state:
        np_state = state["numpy"]
        np.random.set_state((np_state["name"], np_state["keys"].cpu().numpy().astype(np.uint32),
                             int(np_state["pos"]), int(np_state["has_gauss"]),
                             float(np_state["cached_gaussian"])))
    if "python" in state:
        py_state = state["python"]
        internal = tuple(int(v) for v in py_state["internal"].tolist())
        random.setstate((int(py_state["version"]), internal, py_state["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu().to(torch.uint8) for s in cuda_states])
        else:
            log.warning("checkpoint has CUDA RNG states for %d devices, this machine has %d: "
                        "CUDA RNG not restored", len(cuda_states), torch.cuda.device_count())


# --------------------------------------------------------------------------------------------
# Training checkpoints: what a run saves and restores
# --------------------------------------------------------------------------------------------

FORMAT_VERSION = 1


@dataclasses.dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0                       # completed epochs
    batches_done: int = 0                # batches already trained in epoch `epoch` (mid-epoch stop)
    global_step: int = 0                 # batches trained so far, skipped ones included
    best_val_loss: float = float("inf")
    best_epoch: int = 0
    epochs_without_improvement: int = 0


def build_checkpoint(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler_state: dict[str, Any], progress: Progress,
                     train_config: dict[str, Any], rng_states: list[dict[str, Any]],
                     partial_epoch: dict[str, Any] | None = None,
                     extra: dict[str, Any] | None = None) -> dict[str, Any]:
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


def check_model_config(path: str | os.PathLike, state: dict[str, Any],
                       model_config: dict[str, Any]) -> None:
    """One line naming the first model setting that differs between a checkpoint and the model
    built from the current flags."""
    saved = state.get("model_config") or {}
    different = sorted(k for k in set(saved) | set(model_config)
                       if saved.get(k) != model_config.get(k))
    if saved and different:
        key = different[0]
        raise CheckpointError(
            f"{path} was trained with {key}={saved.get(key)!r}, these flags give "
            f"{model_config.get(key)!r} (and {len(different) - 1} more difference(s)): pass the "
            f"same model flags to resume")


def restore_training_state(path: str | os.PathLike, state: dict[str, Any],
                           model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                           progress: Progress) -> None:
    """Weights, optimizer and progress from a loaded checkpoint (in place)."""
    check_model_config(path, state, dict(getattr(model, "config", {})))
    try:
        model.load_state_dict(state["model_state_dict"])
        optimizer.load_state_dict(state["optimizer_state_dict"])
    except (RuntimeError, ValueError, KeyError) as error:
        raise CheckpointError(f"{path}: does not fit this model/optimizer "
                              f"({str(error).splitlines()[0]})") from None
    for item in dataclasses.fields(Progress):
        if item.name in state:
            setattr(progress, item.name, type(getattr(progress, item.name))(state[item.name]))


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
    _fsync_directory(destination.parent)
