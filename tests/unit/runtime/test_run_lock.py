"""songweave/runtime/run_lock.py: one run per folder; live holders refuse, dead ones are taken
over."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT

from songweave.runtime.run_lock import (
    RUN_LOCK_NAME,
    RunLock,
    RunLockError,
    current_record,
    process_start_time,
    read_lock,
)

HOLDER = (
    "import sys, time\n"
    "from songweave.runtime import run_lock\n"
    "with run_lock.RunLock(sys.argv[1], command='train --fake'):\n"
    "    print('held', flush=True)\n"
    "    sys.stdin.readline()\n"
)


def _start_holder(folder: Path) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def _write_record(folder: Path, age_s: float = 0.0, **changes) -> Path:
    record = dataclasses.replace(current_record("train --old"), **changes)
    path = folder / RUN_LOCK_NAME
    path.write_text(json.dumps(dataclasses.asdict(record)))
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


def test_live_holder_in_another_process_is_refused_by_name(tmp_path):
    holder = _start_holder(tmp_path)
    try:
        with pytest.raises(RunLockError) as info:
            RunLock(tmp_path).acquire()
        message = str(info.value)
        assert f"PID {holder.pid} on {os.uname().nodename}" in message
        assert "train --fake" in message and "since 20" in message and "\n" not in message
    finally:
        holder.communicate("\n", timeout=30)
    assert holder.returncode == 0
    assert not (tmp_path / RUN_LOCK_NAME).exists()  # released on a clean exit
    with RunLock(tmp_path):
        assert (tmp_path / RUN_LOCK_NAME).exists()


def test_lock_of_a_killed_process_is_taken_over_with_a_warning(tmp_path, caplog):
    holder = _start_holder(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert (tmp_path / RUN_LOCK_NAME).exists()  # SIGKILL leaves it behind
    with (
        caplog.at_level(logging.WARNING, logger="songweave.runtime.run_lock"),
        RunLock(tmp_path) as lock,
    ):
        assert lock.taken_over is not None and lock.taken_over.pid == holder.pid
        assert read_lock(lock.path).pid == os.getpid()
    assert f"PID {holder.pid}" in caplog.text and "no longer exists" in caplog.text
    assert not (tmp_path / RUN_LOCK_NAME).exists()


def test_reused_pid_is_stale(tmp_path):
    # PID 1 is alive, but its kernel start time is not the recorded one.
    _write_record(tmp_path, pid=1, process_start="1")
    assert process_start_time(1) != "1"
    with RunLock(tmp_path) as lock:
        assert lock.taken_over.pid == 1


def test_other_host_is_live_until_its_heartbeat_stops(tmp_path):
    _write_record(tmp_path, age_s=30, host="gpu-node-17", pid=4242)
    with pytest.raises(RunLockError, match="PID 4242 on gpu-node-17"):
        RunLock(tmp_path).acquire()
    _write_record(tmp_path, age_s=3600, host="gpu-node-17", pid=4242)
    with RunLock(tmp_path) as lock:
        assert lock.taken_over.host == "gpu-node-17"


def test_requeued_slurm_job_takes_over_its_earlier_incarnation(tmp_path, monkeypatch):
    _write_record(tmp_path, host="gpu-node-17", slurm_job_id="991", slurm_restart_count=0)
    monkeypatch.setenv("SLURM_JOB_ID", "991")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    with RunLock(tmp_path) as lock:
        assert lock.taken_over.slurm_job_id == "991"
    # A different job with a fresh heartbeat on another host is a live run.
    _write_record(tmp_path, host="gpu-node-17", slurm_job_id="990", slurm_restart_count=0)
    with pytest.raises(RunLockError, match="SLURM job 990"):
        RunLock(tmp_path).acquire()


def test_unreadable_record_is_stale_only_after_a_grace_period(tmp_path):
    path = tmp_path / RUN_LOCK_NAME
    path.write_text("{not json")
    with pytest.raises(RunLockError, match="a launcher starting up"):
        RunLock(tmp_path).acquire()
    stamp = time.time() - 60
    os.utime(path, (stamp, stamp))
    with RunLock(tmp_path) as lock:
        assert lock.taken_over is None and lock.holds_lock()


def test_heartbeat_refreshes_and_release_leaves_a_successor_alone(tmp_path):
    lock = RunLock(tmp_path, heartbeat_s=0.05)
    lock.acquire()
    stamp = time.time() - 3600
    os.utime(lock.path, (stamp, stamp))
    deadline = time.time() + 10
    while lock.path.stat().st_mtime < stamp + 1800 and time.time() < deadline:
        time.sleep(0.05)
    assert lock.path.stat().st_mtime > stamp + 1800
    with pytest.raises(RunLockError, match="already held by this process"):
        lock.acquire()
    # Someone else took the folder over (we were judged stale): release must not delete theirs.
    successor = _write_record(tmp_path, pid=1, token="theirs")
    lock.release()
    assert read_lock(successor).token == "theirs"


def test_unwritable_folder_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunLockError, match="cannot create run folder .*file/run"):
        RunLock(blocker / "run").acquire()
