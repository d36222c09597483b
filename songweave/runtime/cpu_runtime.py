"""Process-wide CPU runtime settings for training, benchmarks and inference.

`share_cores(n)`: one share of the cores per training process (see its doc).

`tune_malloc()`: glibc's malloc hands every block above its mmap threshold (128 KiB at start,
raised as blocks are freed) to fresh mmap'd pages and gives them back on free, so a training step,
which allocates and frees activations of a few MiB to a few tens of MiB hundreds of times, has
the kernel fault in and zero the same memory again and again: 35-80 thousand page faults and
0.06-0.25 s of system time per default CPU step in `creative-bench` on a 2-core Xeon. Serving blocks
up to 32 MiB (the largest threshold older glibc accepts) from the heap and keeping up to 1 GiB of
freed heap for reuse removes nearly all of them. Freed memory is then kept by the process rather
than returned to the system. Call it once, early, in every process that trains or infers:
processes forked later inherit the setting, spawned ones (DDP ranks) do not.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
from collections.abc import Mapping

import torch

log = logging.getLogger(__name__)

# mallopt parameters from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20  # the largest value older glibc releases accept on 64-bit systems
TRIM_THRESHOLD_BYTES = 1 << 30


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        return libc
    except (OSError, AttributeError):  # another C library (musl) or none found
        return None


def tune_malloc(
    mmap_threshold: int = MMAP_THRESHOLD_BYTES, trim_threshold: int = TRIM_THRESHOLD_BYTES
) -> str:
    """Have glibc malloc keep tensor-sized blocks for reuse (see the module doc). Returns one line
    saying what was set, or why nothing was (not glibc, or glibc refused a value)."""
    libc = _glibc()
    if libc is None:
        return "malloc unchanged: not glibc on Linux"
    version = libc.gnu_get_libc_version().decode()
    refused = [
        name
        for name, parameter, value in (
            ("mmap threshold", _M_MMAP_THRESHOLD, mmap_threshold),
            ("trim threshold", _M_TRIM_THRESHOLD, trim_threshold),
        )
        if libc.mallopt(parameter, value) != 1
    ]
    if refused:
        return f"malloc partly unchanged: glibc {version} refused the {' and '.join(refused)}"
    line = (
        f"glibc {version} malloc: blocks up to {mmap_threshold >> 20} MiB from the heap, up to "
        f"{trim_threshold >> 20} MiB of freed heap kept for reuse"
    )
    log.info(line)
    return line


def share_cores(processes_per_machine: int, environ: Mapping[str, str] = os.environ) -> str:
    """Give each of the training processes on this machine its share of the cores as torch
    intra-op threads. Returns one line saying what was set, or why nothing was.

    torch starts as many threads as the machine has cores in every process, so two DDP ranks on
    2 cores ran 4 busy threads on 2 cores: the demo's training step took 2.4x as long as with
    one thread per rank (2.04 against 0.86 s per step, 2-core Xeon). OMP_NUM_THREADS, when set
    (torchrun sets it to 1), is left as it is.
    """
    if environ.get("OMP_NUM_THREADS"):
        return f"intra-op threads unchanged: OMP_NUM_THREADS={environ['OMP_NUM_THREADS']}"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = max(1, (cores or 1) // max(1, processes_per_machine))
    torch.set_num_threads(threads)
    line = (
        f"{threads} intra-op thread(s) per process: {cores} core(s), "
        f"{processes_per_machine} process(es) on this machine"
    )
    log.info(line)
    return line
