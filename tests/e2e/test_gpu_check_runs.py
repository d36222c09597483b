"""creative-gpu-check's training, SIGTERM / resume and arrangement checks run for real, on one CPU
process. Its flags, refusals and report: tests/unit/tools/test_gpu_check.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from songweave.tools import gpu_check
from songweave.tools.gpu_check import GpuCheckConfig, Workspace

pytestmark = pytest.mark.slow


def test_training_sigterm_resume_and_arrange_checks_on_cpu(tmp_path):
    # The same checks as on a GPU, on one CPU process in fp32 without compiling: the launcher
    # calls, the SIGTERM / resume logic and the arrangement check are what is tested here.
    config = GpuCheckConfig(
        out=str(tmp_path / "out"), device="cpu", precision="fp32", compile=False, timeout_s=240
    )
    space = Workspace(tmp_path / "work", tmp_path / "out", world_size=1)
    space.out.mkdir()
    trained = gpu_check.check_training_stops_on_sigterm(config, space)
    assert trained.ok, (trained.summary, Path(trained.log).read_text()[-3000:])
    assert trained.figures["stopped_epoch"] >= 1 and trained.figures["backend"] == "single process"
    resumed = gpu_check.check_resume_continues(config, space)
    assert resumed.ok, (resumed.summary, Path(resumed.log).read_text()[-3000:])
    assert resumed.figures["final_epoch"] == space.stopped_epoch + 2
    arranged = gpu_check.check_arrange(config, space)
    assert arranged.ok, (arranged.summary, Path(arranged.log).read_text()[-3000:])
    assert arranged.figures["real_time_factor"] > 0
    assert {p.name for p in space.out.iterdir()} == {"train.log", "resume.log", "arrange.log"}
