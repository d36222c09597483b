"""One training run per folder: a lock file the launcher holds for the whole run.

    with RunLock(checkpoint_dir):          # RunLockError (one line) when another run holds it
        ... spawn workers, train ...

The lock is ``<folder>/run.lock``, a small JSON record (PID, host, start time, command, SLURM job
id and restart count, the process's kernel start time) created with ``O_CREAT | O_EXCL``, so two
launchers can never both create it. While the run lasts a daemon thread touches the file every
``heartbeat_s`` seconds; on release the file is deleted (only if it is still ours).

An existing lock is taken over, with a warning naming the old holder, only when its holder is
certainly gone:

- same host, and the PID no longer exists or now belongs to another process (kernel start time
  differs: a reused PID);
- same SLURM job id with a lower SLURM_RESTART_COUNT: an earlier incarnation of this job before a
  requeue (SLURM stops it before starting the next);
- another host, and no heartbeat for ``stale_after_s`` seconds (a crashed node; a PID on another
  host cannot be checked);
- an unreadable record older than a few seconds (a launcher killed while creating it).

Anything else is a live holder: ``RunLockError`` names it (PID, host, since when, command).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import logging
import os
import shlex
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

log = logging.getLogger(__name__)

RUN_LOCK_NAME = "run.lock"
HEARTBEAT_S = 60.0
# Ten missed heartbeats: a lock from another host is stale only when its node is surely gone.
STALE_AFTER_S = 600.0
# A record that cannot be parsed is being written for at most this long by a live launcher.
UNREADABLE_GRACE_S = 10.0
_COMMAND_SHOWN = 200


class RunLockError(RuntimeError):
    """The run folder is in use (or the lock cannot be written); the message is one line."""


@dataclass(frozen=True)
class LockRecord:
    pid: int
    host: str
    started: float  # Unix time the lock was taken
    command: str
    slurm_job_id: str  # "" outside SLURM
    slurm_restart_count: int
    process_start: str  # kernel start time of pid ("" where /proc is missing)
    token: str  # tells our own record apart from a successor's

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        job = f", SLURM job {self.slurm_job_id}" if self.slurm_job_id else ""
        command = (
            self.command
            if len(self.command) <= _COMMAND_SHOWN
            else self.command[:_COMMAND_SHOWN] + "..."
        )
        return f"PID {self.pid} on {self.host} since {since}{job} ({command})"


def process_alive(pid: int) -> bool:
    """True when a process with this PID exists on this host (of any user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def process_start_time(pid: int) -> str:
    """Kernel start time of ``pid`` in clock ticks since boot ("" when unknown)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # Field 2 (the command name) may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else ""


def _slurm_restart_count() -> int:
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def current_record(command: str | None = None) -> LockRecord:
    """The record this process would write."""
    return LockRecord(
        pid=os.getpid(),
        host=socket.gethostname(),
        started=time.time(),
        command=command if command is not None else shlex.join([sys.executable] + sys.argv),
        slurm_job_id=os.environ.get("SLURM_JOB_ID", ""),
        slurm_restart_count=_slurm_restart_count(),
        process_start=process_start_time(os.getpid()),
        token=uuid.uuid4().hex,
    )


def read_lock(path: Path) -> LockRecord | None:
    """The record in ``path``; None when it cannot be parsed. FileNotFoundError when absent."""
    text = path.read_text()
    try:
        values = json.loads(text)
        names = {f.name for f in dataclasses.fields(LockRecord)}
        return LockRecord(**{k: v for k, v in values.items() if k in names})
    except (ValueError, TypeError, AttributeError):
        return None


def stale_reason(
    record: LockRecord | None, age_s: float, me: LockRecord, stale_after_s: float = STALE_AFTER_S
) -> str | None:
    """Why the holder of ``record`` is certainly gone, or None when it may still be running.

    ``age_s`` is the time since the lock file was last touched (its heartbeat).
    """
    if record is None:
        if age_s > UNREADABLE_GRACE_S:
            return f"unreadable lock record untouched for {age_s:.0f} s"
        return None
    if (
        me.slurm_job_id
        and record.slurm_job_id == me.slurm_job_id
        and record.slurm_restart_count < me.slurm_restart_count
    ):
        return (
            f"earlier run of this SLURM job (restart {record.slurm_restart_count}, now "
            f"{me.slurm_restart_count})"
        )
    if record.host == me.host:
        if not process_alive(record.pid):
            return "its process no longer exists"
        if record.process_start and record.process_start != process_start_time(record.pid):
            return "its PID now belongs to another process"
        return None
    if age_s > stale_after_s:
        return f"no heartbeat from {record.host} for {age_s / 60:.0f} min"
    return None


@contextlib.contextmanager
def _folder_guard(folder: Path) -> Iterator[None]:
    """flock on the folder around check-and-take, so two launchers never both take over.

    Best effort: file systems without flock (some network mounts) go on without it; creating
    the lock with O_EXCL is still exclusive there.
    """
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)  # closing releases the flock


class RunLock:
    """Context manager holding ``<folder>/run.lock`` for the whole run (see the module doc).

    ``taken_over`` is the record of a stale holder replaced by ``acquire`` (None otherwise).
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        command: str | None = None,
        *,
        heartbeat_s: float = HEARTBEAT_S,
        stale_after_s: float = STALE_AFTER_S,
    ):
        self.folder = Path(folder)
        self.path = self.folder / RUN_LOCK_NAME
        self.command = command
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self.record: LockRecord | None = None
        self.taken_over: LockRecord | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def acquire(self) -> None:
        if self.record is not None:
            raise RunLockError(f"{self.path}: already held by this process")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunLockError(
                f"cannot create run folder {self.folder}: {error.strerror or error}"
            ) from None
        me = current_record(self.command)
        with _folder_guard(self.folder):
            for _ in range(3):
                if self._create(me):
                    self.record = me
                    self._start_heartbeat()
                    return
                try:
                    age_s = time.time() - self.path.stat().st_mtime
                    existing = read_lock(self.path)
                except FileNotFoundError:
                    continue  # released between our attempt and the read: try again
                except OSError as error:
                    raise RunLockError(
                        f"cannot read run lock {self.path}: {error.strerror or error}"
                    ) from None
                reason = stale_reason(existing, age_s, me, self.stale_after_s)
                if reason is None:
                    holder = existing.describe() if existing else "a launcher starting up"
                    raise RunLockError(
                        f"{self.folder} is in use by another run: {holder}; wait for it to end "
                        f"or use another folder (lock file {self.path})"
                    )
                log.warning(
                    "taking over the run lock %s from %s: %s",
                    self.path,
                    existing.describe() if existing else "an unknown holder",
                    reason,
                )
                self.taken_over = existing
                self.path.unlink(missing_ok=True)
        raise RunLockError(
            f"{self.path}: could not take the run lock (other launchers keep racing for it)"
        )

    def _create(self, record: LockRecord) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError as error:
            raise RunLockError(
                f"cannot create run lock {self.path}: {error.strerror or error}"
            ) from None
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(dataclasses.asdict(record), handle)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            self.path.unlink(missing_ok=True)
            raise RunLockError(
                f"cannot write run lock {self.path}: {error.strerror or error}"
            ) from None
        return True

    def holds_lock(self) -> bool:
        """True while ``run.lock`` still carries this lock's record."""
        if self.record is None:
            return False
        try:
            current = read_lock(self.path)
        except OSError:
            return False
        return current is not None and current.token == self.record.token

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._heartbeat = threading.Thread(
            target=self._beat, name="run-lock-heartbeat", daemon=True
        )
        self._heartbeat.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if not self.holds_lock():
                log.error("run lock %s is no longer ours (taken over by another run?)", self.path)
                return
            try:
                os.utime(self.path)
            except OSError as error:
                if error.errno != errno.ENOENT:
                    log.warning("cannot refresh run lock %s: %s", self.path, error)

    def release(self) -> None:
        """Stop the heartbeat and delete the lock file if it is still ours."""
        if self.record is None:
            return
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None
        if self.holds_lock():
            self.path.unlink(missing_ok=True)
        self.record = None
