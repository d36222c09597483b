"""cpu_runtime.tune_malloc in a fresh interpreter: tuned, training steps stop faulting in fresh
pages. Its one-line report and core sharing: tests/unit/runtime/test_cpu_runtime.py."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from helpers import ROOT

pytestmark = pytest.mark.slow


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
