"""cpu_runtime: tune_malloc reports what it did in one line, leaves other C libraries alone and
names refused values; share_cores gives each process its share. The page faults of training
steps, tuned and untuned: tests/e2e/test_cpu_runtime_runs.py."""

from __future__ import annotations

import os

from songweave.runtime import cpu_runtime


def test_tune_malloc_says_what_it_did_in_one_line():
    line = cpu_runtime.tune_malloc()
    assert "\n" not in line
    if cpu_runtime._glibc() is not None:
        assert line.startswith("glibc ") and "32 MiB" in line


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.setattr(cpu_runtime, "_glibc", lambda: None)
    assert cpu_runtime.tune_malloc() == "malloc unchanged: not glibc on Linux"


def test_refused_values_are_reported(monkeypatch):
    class RefusingLibc:
        @staticmethod
        def gnu_get_libc_version() -> bytes:
            return b"2.99"

        @staticmethod
        def mallopt(parameter: int, value: int) -> int:
            return 0 if parameter == cpu_runtime._M_MMAP_THRESHOLD else 1

    monkeypatch.setattr(cpu_runtime, "_glibc", RefusingLibc)
    assert (
        cpu_runtime.tune_malloc()
        == "malloc partly unchanged: glibc 2.99 refused the mmap threshold"
    )


def test_share_cores_gives_each_process_its_share(monkeypatch):
    import torch

    from songweave.runtime.cpu_runtime import share_cores
    from songweave.runtime.launch_env import processes_on_this_machine

    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
        assert share_cores(4, environ={}).startswith("2 intra-op thread(s)")
        assert torch.get_num_threads() == 2
        assert share_cores(16, environ={}).startswith("1 intra-op thread(s)")
        assert "unchanged" in share_cores(4, environ={"OMP_NUM_THREADS": "3"})
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert processes_on_this_machine(8, {"LOCAL_WORLD_SIZE": "2"}) == 2
    assert processes_on_this_machine(8, {"SLURM_NTASKS_PER_NODE": "4(x2)"}) == 4
    assert processes_on_this_machine(3, {}) == 3
