"""songweave/runtime/resources.py: RAM estimate against its calibration data, one-line findings,
machine probing."""

from __future__ import annotations

import dataclasses
import json

from helpers import ROOT

from songweave.runtime import resources as rs
from songweave.runtime.resources import (
    Finding,
    MachineResources,
    ModelSize,
    RamEstimate,
    check_batch_size,
    check_resources,
    estimate_process_ram,
)

DEMO = ModelSize(
    parameters=1_357_120,
    encoding_dim=128,
    nhead=4,
    num_layers=1,
    num_stages=2,
    dim_feedforward=256,
    dropout=0.0,
    batch_size=8,
    latent_frames=376,
    audio_samples=48_000,
)


def _machine(ram_gb: float, cores: int = 16, gpus: int = 0) -> MachineResources:
    return MachineResources(
        cores=cores, gpus=gpus, ram_available=int(ram_gb * rs.GIB), ram_source="MemAvailable"
    )


def test_estimate_matches_every_calibration_point():
    points = [
        json.loads(line)
        for line in (ROOT / "docs" / "ram" / "points.jsonl").read_text().splitlines()
        if line.strip()
    ]
    assert len(points) == 14
    for point in points:
        size = ModelSize(
            parameters=point["parameters"],
            encoding_dim=point["encoding_dim"],
            nhead=point["nhead"],
            num_layers=point["num_layers"],
            num_stages=point["num_stages"],
            dim_feedforward=point["dim_feedforward"],
            dropout=point["dropout"],
            batch_size=point["batch"],
            latent_frames=point["frames"],
            audio_samples=point["samples"] if point["loss_domain"] == "audio" else 0,
        )
        estimate = estimate_process_ram(size, "cpu", world_size=1).per_process / rs.MIB
        measured = point["peak_anon_mib"]
        assert abs(estimate - measured) / measured < 0.12, (point["spec"], estimate, measured)


def test_estimate_parts():
    one = estimate_process_ram(DEMO, "cpu", world_size=1)
    two = estimate_process_ram(DEMO, "cpu", world_size=2)
    assert two.per_process - one.per_process == rs.DDP_BYTES_PER_PARAM * DEMO.parameters
    bigger = estimate_process_ram(dataclasses.replace(DEMO, batch_size=16), "cpu", 1)
    assert bigger.per_process - one.per_process == 8 * one.per_item
    latent = estimate_process_ram(dataclasses.replace(DEMO, audio_samples=0), "cpu", 1)
    assert one.per_item - latent.per_item == rs.AUDIO_BYTES_PER_SAMPLE * DEMO.audio_samples
    dropout = estimate_process_ram(dataclasses.replace(DEMO, dropout=0.1), "cpu", 1)
    assert dropout.per_item - one.per_item == int(4 * rs.ATTENTION_FACTOR * 4 * 376**2 * 2)
    cuda = estimate_process_ram(DEMO, "cuda", world_size=2)
    assert cuda.lower_bound and cuda.per_item == 0 and cuda.per_process < one.per_process
    assert one.total(2) == rs.SHARED_BYTES + 2 * one.per_process


def test_too_little_memory_is_one_error_line_with_the_numbers():
    ram = estimate_process_ram(DEMO, "cpu", world_size=4)
    findings = check_resources(4, "cpu", 0, _machine(2.0), ram)
    assert [f.level for f in findings] == ["error"]
    message = findings[0].message
    assert message.startswith("not enough memory: 4 process(es) need about ")
    assert "2.0 GiB available (MemAvailable)" in message and "\n" not in message
    assert message.endswith(
        f"lower --batch_size (each item takes about "
        f"{ram.per_item / rs.MIB:.0f} MiB) or --world_size"
    )
    assert check_resources(4, "cpu", 0, _machine(64.0), ram) == []
    tight = ram.total(4) / rs.GIB / 0.95
    assert [f.level for f in check_resources(4, "cpu", 0, _machine(tight), ram)] == ["warning"]


def test_cuda_checks():
    ram = estimate_process_ram(DEMO, "cuda", world_size=4)
    findings = check_resources(4, "cuda", 2, _machine(64.0, cores=2, gpus=2), ram)
    assert findings == [
        Finding("error", "--world_size 4 needs 4 GPUs (one per process), 2 visible")
    ]  # no core warning for GPU processes
    findings = check_resources(2, "cuda", 0, _machine(0.5, gpus=2), ram)
    assert "not enough memory: at least 2 process(es)" in findings[0].message
    # A lower bound that fits is no reason to warn.
    assert check_resources(2, "cuda", 0, _machine(ram.total(2) / rs.GIB * 1.05, gpus=2), ram) == []


def test_cpu_oversubscription_is_a_warning():
    ram = RamEstimate(per_process=rs.GIB, per_item=rs.MIB, shared=0, lower_bound=False)
    findings = check_resources(2, "cpu", 2, _machine(64.0, cores=4), ram)
    assert findings == [
        Finding(
            "warning",
            "2 training process(es) with 2 DataLoader worker(s) "
            "each are 6 processes on 4 core(s): they will slow "
            "each other down (lower --world_size or "
            "--num_workers)",
        )
    ]


def test_batch_larger_than_the_data():
    assert check_batch_size(100, 8, 2) is None
    warning = check_batch_size(10, 8, 2)
    assert warning.level == "warning" and warning.message == (
        "--batch_size 8 is larger than the data: 10 training pairs over 2 process(es) give 5 "
        "each, so every step sees only 5 pair(s) (lower --batch_size to 5 or add data)"
    )
    error = check_batch_size(10, 8, 2, drop_last=True)
    assert error.level == "error" and "no full batch exists" in error.message


def test_meminfo_and_cgroups(tmp_path):
    assert rs.parse_meminfo("MemTotal: 100 kB\nMemAvailable:  2048 kB\n") == 2 * rs.MIB
    assert rs.parse_meminfo("MemTotal: 100 kB\n") is None
    # cgroup v2: 8 GiB limit, 7 GiB used of which 2 GiB page cache -> 3 GiB left.
    job = tmp_path / "v2" / "slurm" / "job_1"
    job.mkdir(parents=True)
    (job / "memory.max").write_text(str(8 * rs.GIB))
    (job / "memory.current").write_text(str(7 * rs.GIB))
    (job / "memory.stat").write_text(f"anon 1\nfile {2 * rs.GIB}\n")
    (job / "cpu.max").write_text("400000 100000\n")
    v2 = "0::/slurm/job_1\n"
    assert rs.cgroup_memory_available(v2, tmp_path / "v2") == 3 * rs.GIB
    assert rs.cgroup_cpu_limit(v2, tmp_path / "v2") == 4.0
    (job / "memory.max").write_text("max\n")
    (job / "cpu.max").write_text("max 100000\n")
    assert rs.cgroup_memory_available(v2, tmp_path / "v2") is None
    assert rs.cgroup_cpu_limit(v2, tmp_path / "v2") is None
    # cgroup v1, limit at the controller's root (our folder absent).
    memory = tmp_path / "v1" / "memory"
    memory.mkdir(parents=True)
    (memory / "memory.limit_in_bytes").write_text(str(4 * rs.GIB))
    (memory / "memory.usage_in_bytes").write_text(str(1 * rs.GIB))
    (memory / "memory.stat").write_text("cache 0\n")
    cpu = tmp_path / "v1" / "cpu"
    cpu.mkdir()
    (cpu / "cpu.cfs_quota_us").write_text("-1\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    v1 = "4:memory:/job_2\n1:cpu,cpuacct:/job_2\n"
    assert rs.cgroup_memory_available(v1, tmp_path / "v1") == 3 * rs.GIB
    assert rs.cgroup_cpu_limit(v1, tmp_path / "v1") is None


def test_probe_resources_on_this_machine():
    machine = rs.probe_resources(gpus_visible=0)
    assert machine.cores >= 1 and machine.gpus == 0
    assert 0 < machine.ram_available and machine.ram_source in (
        "MemAvailable",
        "cgroup memory limit",
    )


def test_stage_widths():
    assert rs.stage_widths(64, 1) == [64]
    assert rs.stage_widths(64, 3) == [128, 192, 192]
