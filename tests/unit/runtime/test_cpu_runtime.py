"""cpu_runtime.tune_malloc: training steps stop faulting in fresh pages."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from songweave.runtime import cpu_runtime

ROOT = Path(__file__).resolve().parents[3]

# A feed-forward block's training steps (activations of 2 to 20 MB), then the page faults of 20.
STEP_FAULTS = textwrap.dedent("""
    import resource, sys, torch
    sys.path.insert(0, {root!r})
    torch.set_num_threads(1)
    if {tune}:
        from songweave.runtime import cpu_runtime
        print(cpu_runtime.tune_malloc(), file=sys.stderr)
    torch.manual_seed(0)
    block = torch.nn.Sequential(torch.nn.Linear(256, 2048), torch.nn.GELU(),
                                torch.nn.Linear(2048, 256))
    x = torch.randn(2400, 256)
    def step():
        block(x).square().mean().backward()
    for _ in range(5):  # the heap grows to its working size over the first few steps
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        step()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults_in_20_steps(tune: bool) -> float:
    code = STEP_FAULTS.format(root=str(ROOT), tune=tune)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # times a training step in a fresh interpreter
@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only"
)
def test_tuned_malloc_removes_the_page_faults_of_a_training_step():
    untuned = _faults_in_20_steps(tune=False)
    if untuned < 10_000:
        pytest.skip(f"malloc faulted in only {untuned:.0f} pages in 20 steps here, even untuned")
    # Tuned, the heap may still grow once or twice: a 20 MB activation is 4,800 pages.
    tuned = _faults_in_20_steps(tune=True)
    assert tuned <= 2 * 4800 + 100, (untuned, tuned)


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
