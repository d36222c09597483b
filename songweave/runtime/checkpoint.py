"""Checkpoints that survive anything: plain types, atomic writes, verified loads that never run
code.

A checkpoint is a dict of plain values (tensors, dicts, lists, tuples, numbers, strings, None),
so ``torch.load(path)`` works with ``weights_only=True`` and loading never executes pickled code.
It is written to a temporary file in the same folder, flushed and fsynced, then renamed over the
destination with ``os.replace``: a crash (or a SIGKILL) mid-write leaves either the old file or the
new one, never half of one (and a hidden ``.NAME.tmp-HOST-PID`` file, which
``remove_stale_temporaries`` deletes at the next start).

Integrity: ``torch.save`` writes a zip archive in which every record (the pickle, each tensor
storage) carries the CRC-32 of its bytes. ``load_checkpoint`` reads every record back and checks
it before loading (``verify_checkpoint_file``), so a changed byte is reported as a corrupt file
instead of loading as silently wrong weights. Checkpoints without checksums (the legacy non-zip
format) still load; that is said at debug level.

Public API:
    save_checkpoint(path, state)            atomic write, plain types, finite weights, one-line
                                            errors for a full disk / quota / permission
    copy_checkpoint(source, destination)    atomic byte copy
    save_training_checkpoints(folder, state, best=, epoch_copy=)
                                            best / epoch copies first, checkpoint_last.pth last
    load_checkpoint(path, map_location)     verified weights_only load; CheckpointError names it
    verify_checkpoint_file(path)            the checksum check alone
    remove_stale_temporaries(folder)        temporaries of killed writes
    (what a training run saves, restores and resumes from: runtime/training_state.py)
    CheckpointError
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import errno
import logging
import os
import pickle
import re
import shutil
import socket
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from songweave.runtime.run_lock import process_alive

log = logging.getLogger(__name__)

LAST_NAME = "checkpoint_last.pth"
BEST_NAME = "checkpoint_best.pth"
EPOCH_PATTERN = re.compile(r"^checkpoint_epoch_(\d+)\.pth$")
# Temporaries of save_checkpoint / copy_checkpoint: ".NAME.tmp-HOST-PID"
# (older ones ".NAME.tmp-PID").
TEMP_PATTERN = re.compile(r"^\.(?P<name>checkpoint_.+\.pth)\.tmp-(?:(?P<host>.+)-)?(?P<pid>\d+)$")
ZIP_MAGIC = b"PK\x03\x04"
# The legacy format is a pickle stream (protocol 2 and later start with this opcode).
PICKLE_PREFIX = b"\x80"
VERIFY_CHUNK_BYTES = 4 << 20

# Keys whose tensors must be finite before anything is written (a NaN model is never saved).
WEIGHT_KEYS = ("model_state_dict", "discriminator_state_dict")
# The layout of a training checkpoint this code writes and reads; a file without the key was
# written before versions were recorded and has version 1's layout.
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint cannot be written or read; the message is one line and names the file."""


class CheckpointVersionError(CheckpointError):
    """A checkpoint of a format this code does not read: intact, so never skipped for an older
    one (resuming from that would overwrite the newer run's progress)."""


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
        f"strings only)"
    )


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


def temporary_path(path: Path) -> Path:
    """Where ``path`` is written before the rename: same folder, hidden, host and PID named."""
    return path.with_name(f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}")


def estimate_checkpoint_bytes(plain: Any) -> int:
    """Bytes ``torch.save`` will write for ``plain``: every tensor storage once, plus overhead.

    Each storage is one zip record (header and 64-byte alignment); the pickle of the rest is
    small next to the weights. Used to check free space before writing and to say how much
    was needed when a write fails.
    """
    storages: dict[tuple[str, int], int] = {}
    count = 0

    def visit(tree: Any) -> None:
        nonlocal count
        if isinstance(tree, torch.Tensor):
            count += 1
            storage = tree.untyped_storage()
            storages[(str(tree.device), storage.data_ptr())] = storage.nbytes()
        elif isinstance(tree, dict):
            for value in tree.values():
                visit(value)
        elif isinstance(tree, (list, tuple)):
            for value in tree:
                visit(value)

    visit(plain)
    return sum(storages.values()) + 256 * count + 64 * 1024


def _format_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _os_error_in(error: BaseException) -> OSError | None:
    """The OSError behind ``error``: torch reports a failed write as RuntimeError('unexpected
    pos ...') with the OSError of the file object only as its context."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno is not None:
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _what_is_intact(path: Path, existed: bool) -> str:
    if existed:
        return f"the previous {path.name} is intact"
    return f"no {path.name} existed before; other checkpoints are untouched"


def _write_error(path: Path, error: BaseException, needed: int, existed: bool) -> CheckpointError:
    """One line for a failed write: the file, the cause, space needed vs free, what is intact."""
    intact = _what_is_intact(path, existed)
    free = _free_bytes(path.parent)
    space = (
        f"needs about {_format_bytes(needed)}, "
        f"{_format_bytes(free) if free is not None else 'unknown'} free"
    )
    cause = _os_error_in(error)
    number = cause.errno if cause is not None else None
    if number == errno.ENOSPC or (cause is None and free is not None and free < needed):
        return CheckpointError(f"cannot write {path}: no space left on device ({space}); {intact}")
    if number == errno.EDQUOT:
        return CheckpointError(f"cannot write {path}: disk quota exceeded ({space}); {intact}")
    if number in (errno.EACCES, errno.EPERM):
        return CheckpointError(f"cannot write {path}: permission denied in {path.parent}; {intact}")
    if number == errno.EROFS:
        return CheckpointError(
            f"cannot write {path}: {path.parent} is on a read-only file system; {intact}"
        )
    if cause is not None:
        return CheckpointError(
            f"cannot write {path}: {cause.strerror or cause} (errno {number}); {intact}"
        )
    return CheckpointError(f"cannot write {path}: {_first_line(error)}; {intact}")


@contextlib.contextmanager
def _crc32_on() -> Iterator[None]:
    """torch.save stores a CRC-32 per record unless turned off globally; ours always have it."""
    previous = torch.serialization.get_crc32_options()
    if not previous:
        torch.serialization.set_crc32_options(True)
    try:
        yield
    finally:
        if not previous:
            torch.serialization.set_crc32_options(False)


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically to ``path`` (tmp file in the same folder, fsync, os.replace).

    Refuses (CheckpointError) non-plain values and non-finite weights under ``WEIGHT_KEYS``,
    before anything touches the destination. A write that fails (disk full, quota, permission,
    read-only file system) raises one CheckpointError line naming the file, the space needed and
    free, and what is intact; the temporary file is removed and the destination is unchanged.
    """
    path = Path(path)
    plain = to_plain(state)
    for key in WEIGHT_KEYS:
        if key in plain:
            bad = first_nonfinite_tensor(plain[key], key)
            if bad is not None:
                raise CheckpointError(f"refusing to write {path}: non-finite values in {bad}")
    existed = path.exists()
    needed = estimate_checkpoint_bytes(plain)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _write_error(path, error, needed, existed) from None
    free = _free_bytes(path.parent)
    if free is not None and free < needed:
        # Before writing: a partial file would only fill the disk for everything else.
        raise CheckpointError(
            f"cannot write {path}: no space left on device (needs about "
            f"{_format_bytes(needed)}, {_format_bytes(free)} free); "
            f"{_what_is_intact(path, existed)}"
        )
    # Same folder as the destination so os.replace is a rename on one file system.
    tmp = temporary_path(path)
    try:
        with _crc32_on(), open(tmp, "wb") as handle:
            torch.save(plain, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as error:  # torch turns a failed write into RuntimeError
        tmp.unlink(missing_ok=True)
        raise _write_error(path, error, needed, existed) from None
    except BaseException:  # KeyboardInterrupt, SystemExit: no half-written file either
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def copy_checkpoint(source: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """Atomic byte copy (tmp + fsync + os.replace): cheaper than serializing the state again,
    and the stored checksums travel with the bytes. Failures as in ``save_checkpoint``."""
    source, destination = Path(source), Path(destination)
    existed = destination.exists()
    needed = source.stat().st_size
    tmp = temporary_path(destination)
    try:
        shutil.copyfile(source, tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, destination)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise _write_error(destination, error, needed, existed) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(destination.parent)
    return destination


def save_training_checkpoints(
    folder: str | os.PathLike,
    state: dict[str, Any],
    *,
    best: bool = False,
    epoch_copy: int | None = None,
) -> list[Path]:
    """Write checkpoint_last.pth, and checkpoint_best.pth / checkpoint_epoch_N.pth with it.

    checkpoint_last.pth is always written last: a kill at any point leaves it either old or
    complete, and every file it refers to (its best epoch) already on disk. The state is
    serialized once; the other files are byte copies. Returns the paths written, in order.
    """
    folder = Path(folder)
    targets = []
    if best:
        targets.append(folder / BEST_NAME)
    if epoch_copy is not None:
        targets.append(folder / epoch_checkpoint_name(epoch_copy))
    targets.append(folder / LAST_NAME)
    save_checkpoint(targets[0], state)
    for target in targets[1:]:
        copy_checkpoint(targets[0], target)
    return targets


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


def remove_stale_temporaries(
    folder: str | os.PathLike, *, run_lock_held: bool = False
) -> list[Path]:
    """Delete ``.checkpoint_*.pth.tmp-*`` files left by writes that were killed; return them.

    Only files of our naming pattern are considered. A file is removed when its writer is
    certainly gone: on this host with a PID that no longer exists, or, when the caller holds the
    folder's run lock (one run per folder), any writer but this process, since no other run can
    be writing here. Files of other hosts are otherwise kept (their PIDs cannot be checked).
    """
    folder = Path(folder)
    try:
        children = list(folder.iterdir())
    except OSError:
        return []
    host = socket.gethostname()
    removed = []
    for child in children:
        match = TEMP_PATTERN.match(child.name)
        if match is None or not child.is_file():
            continue
        pid, writer_host = int(match.group("pid")), match.group("host")
        if pid == os.getpid() and writer_host in (None, host):
            continue
        if not run_lock_held and (writer_host != host or process_alive(pid)):
            log.info(
                "left %s: its writer (PID %d on %s) may still be running",
                child,
                pid,
                writer_host or "an unknown host",
            )
            continue
        try:
            child.unlink()
        except OSError as error:
            log.warning("cannot remove leftover temporary file %s: %s", child, error)
            continue
        log.info("removed %s, left by a checkpoint write that was interrupted (PID %d)", child, pid)
        removed.append(child)
    return removed


def _first_line(error: BaseException) -> str:
    """First sentence of an error message (torch's zip errors run on for several lines)."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    line = text.splitlines()[0]
    return line.split(". ")[0].rstrip(".")


def verify_checkpoint_file(path: str | os.PathLike) -> bool:
    """Check the CRC-32 that ``torch.save`` stores for every record of a checkpoint.

    A checkpoint is a zip archive; each record (the pickle, every tensor storage) carries the
    CRC-32 of its bytes, computed while writing. Reading every record back and comparing finds
    any changed byte of content (the reader alone does not check: flipped bytes in a weight
    load silently). Cost: one sequential read, about 0.5 s of CPU time per GB.

    Returns True when verified and False for a file without checksums (the legacy non-zip
    format, or written with CRC-32 turned off). Raises CheckpointError naming the file and the
    damaged record.
    """
    path = Path(path)
    if _file_head(path) != ZIP_MAGIC:
        return False
    record = "the archive index"
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
            if all(info.CRC == 0 for info in records if info.file_size):
                return False
            for info in records:
                record = info.filename
                with archive.open(info) as member:
                    while member.read(VERIFY_CHUNK_BYTES):
                        pass
    except zipfile.BadZipFile as error:
        message = _first_line(error)
        if message.startswith("Bad CRC-32"):
            raise CheckpointError(
                f"{path}: corrupt checkpoint: checksum mismatch in record "
                f"{record} (its bytes changed after it was written)"
            ) from None
        raise CheckpointError(
            f"{path}: corrupted or truncated checkpoint ({message} in {record})"
        ) from None
    except (OSError, EOFError, ValueError, NotImplementedError, struct.error, zlib.error) as error:
        # a damaged index makes the zip reader fail in many ways
        raise CheckpointError(
            f"{path}: corrupted or truncated checkpoint "
            f"({type(error).__name__}: {_first_line(error)} in {record})"
        ) from None
    return True


def load_checkpoint(
    path: str | os.PathLike, map_location: Any = "cpu", mmap: bool = False, verify: bool = True
) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (never runs code).

    With ``verify`` (default) every record's stored checksum is checked first
    (``verify_checkpoint_file``); a file without checksums still loads (said at debug level).
    Raises FileNotFoundError for a missing file and CheckpointError (one line naming the file)
    for a corrupt, truncated or unreadable file, a folder, a file needing arbitrary pickled
    objects, or a non-dict.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if verify and not verify_checkpoint_file(path):
        log.debug(
            "%s has no stored checksums (older format): loaded without an integrity check", path
        )
    head = _file_head(path)
    if not head.startswith(ZIP_MAGIC) and not head.startswith(PICKLE_PREFIX):
        raise CheckpointError(
            f"{path}: corrupted or truncated checkpoint (neither a zip archive "
            f"nor a legacy torch file)"
        )
    # mmap needs the zip format; the legacy format loads without it.
    mmap = mmap and head.startswith(ZIP_MAGIC)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        # torch reports refused globals as UnpicklingError("Weights only load failed ...").
        message = _first_line(error)
        if "weights only" in message.lower() or "weights_only" in message.lower():
            raise CheckpointError(
                f"{path}: refused to load: it needs arbitrary pickled objects, and checkpoints "
                f"are loaded with weights_only=True (plain tensors/dicts/lists/numbers/strings "
                f"only)"
            ) from None
        raise CheckpointError(f"{path}: corrupted or truncated checkpoint ({message})") from None
    except Exception as error:  # noqa: BLE001  zip reader errors, EOFError, OSError ...
        raise CheckpointError(
            f"{path}: corrupted or truncated checkpoint ({type(error).__name__}: "
            f"{_first_line(error)})"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path}: not a checkpoint (top level is {type(state).__name__}, expected a dict)"
        )
    check_format_version(path, state)
    return state


def check_format_version(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Refuse a checkpoint whose ``format_version`` this code does not read (a newer library's,
    or a value that is no version at all): its keys could mean something else."""
    version = state.get("format_version", 1)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointVersionError(f"{path}: format_version {version!r} is not a version number")
    if version > FORMAT_VERSION:
        raise CheckpointVersionError(
            f"{path}: checkpoint format version {version} is newer than this code reads "
            f"(version {FORMAT_VERSION}): upgrade songweave to load it"
        )
    if version < 1:
        raise CheckpointVersionError(
            f"{path}: unknown checkpoint format version {version} (this code reads version "
            f"{FORMAT_VERSION})"
        )


def refuse_nonfinite_weights(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """One CheckpointError line naming the first weight that holds NaN or Inf under
    ``WEIGHT_KEYS``: such a model (diverged, or damaged after its checksums were written) would
    only produce garbage."""
    for key in WEIGHT_KEYS:
        bad = first_nonfinite_tensor(state.get(key), key)
        if bad is not None:
            raise CheckpointError(
                f"{path}: non-finite values in {bad} (a diverged or damaged model): refusing "
                f"to load it"
            )


def _file_head(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(ZIP_MAGIC))
    except OSError as error:
        raise CheckpointError(
            f"{path}: cannot read checkpoint ({error.strerror or error})"
        ) from None


def require_keys(state: dict[str, Any], keys: tuple[str, ...], path: str | os.PathLike) -> None:
    missing = [key for key in keys if key not in state]
    if missing:
        raise CheckpointError(f"{path}: not a training checkpoint (missing {', '.join(missing)})")
