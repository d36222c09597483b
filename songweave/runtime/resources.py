"""Up-front resource checks: will this run fit the machine? One-line findings before any spawn.

    machine = probe_resources(gpus_visible=cuda_count)
    ram = estimate_process_ram(ModelSize(...), device_kind="cpu", world_size=2)
    findings = check_resources(world_size=2, device_kind="cpu", num_workers=2, machine=machine,
                               ram=ram) + check_batch_size(train_pairs, batch_size, world_size)
    errors = [f.message for f in findings if f.level == "error"]

``check_resources`` and ``check_batch_size`` are pure functions of their arguments;
``probe_resources`` reads the machine (CPU affinity and cgroup quota, /proc/meminfo and the
cgroup memory limit a SLURM job runs under).

The RAM estimate of one training process (what it keeps privately; library code is shared) is
a sum of parts whose coefficients were fitted to measurements: CPU, fp32, torch 2.14, the
``RssAnon`` peak of one process that builds codec, model, loss and AdamW and runs three training
steps, for 14 configurations (docs/ram/calibrate_ram.py reproduces them; docs/ram/points.jsonl
holds the measurements, docs/ram/fit.txt the fit):

    BASE_BYTES                   python, torch, the project's modules, codec and loss  360 MiB
    4 bytes per parameter        the weights (CPU only)
    12 bytes per parameter       gradients and AdamW's two moments (CPU only)
    STEP_FIXED_BYTES             what the first step adds besides (fitted)              12 MiB
    4 bytes per parameter        DDP's gradient buckets (CPU, world size > 1; DDP's design,
                                 not measured)
    per batch item (CPU only):
      4 * T * (sum over encoder layers of 12.1 * C + 2.0 * F  +  93 * D)
          T latent frames, C the stage's width (2D for the first stage, 3D after), F the
          feed-forward width, D the latent channels: activations kept for the backward pass
      4 * 3.1 * H * T^2 per encoder layer, when dropout > 0 (the CPU attention then runs
          unfused and keeps the attention weights; H heads)
      400 bytes per audio sample with the audio-domain loss (decoded audio and the
          multi-resolution spectra)

plus SHARED_BYTES (library code mapped from files, 340 MiB) once per machine. Over the 14
configurations (two model sizes: 0.5-2.5 M and 22.7 M parameters; batch 1-16; 0.05-4 s segments;
dropout on and off; audio and latent loss) the estimate is within 9% of the measurement, which
itself varies by about 6% between identical runs (a rerun of the fit moves the three per-frame
factors, which trade off against each other, but not the predictions).

Against real runs of the demo configuration (``train_simple_ddp.py --demo --epochs 1``, two CPU
workers, batch 8, 2 s segments, 1.36 M parameters; measured with docs/ram/peak_rss.py): with
``--max_steps_per_epoch 10`` each worker's private memory (RssAnon) peaked at 819 and 820 MiB,
the estimate is 763 MiB (7% under:
process group and validation are not in the single-process measurement); file-backed memory
peaked at 596-612 MiB: the 340 MiB of libraries plus latent-cache pages read (page cache,
reclaimable, not counted). Over a full epoch the workers' peak resident size was 1.48 and 1.52
GiB, the additional part being more cache pages read.

On CUDA the weights, optimizer and activations live in GPU memory; the host keeps the base and,
while resuming, the checkpoint loaded to the CPU (16 bytes per parameter). The CUDA runtime's own
host memory was not measured (no GPU where this was written), so the CUDA estimate is a lower
bound: it only refuses runs that cannot fit even without it. DataLoader worker processes
(--num_workers) are not in the estimate either; GPU memory is not checked.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

MIB = 1 << 20
GIB = 1 << 30

BASE_BYTES = 360 * MIB
SHARED_BYTES = 340 * MIB
WEIGHT_BYTES_PER_PARAM = 4
TRAINING_BYTES_PER_PARAM = 12  # gradients 4 + AdamW moments 8
DDP_BYTES_PER_PARAM = 4
RESUME_BYTES_PER_PARAM = 16  # weights + AdamW moments loaded on the CPU
STEP_FIXED_BYTES = 12 * MIB
WIDTH_FACTOR = 12.1  # floats kept per frame per channel of an encoder layer
FEEDFORWARD_FACTOR = 2.0  # floats kept per frame per feed-forward unit
LATENT_FACTOR = 93  # floats per frame per latent channel outside the encoder layers
ATTENTION_FACTOR = 3.1  # T x T matrices kept per head and layer (unfused attention)
AUDIO_BYTES_PER_SAMPLE = 400
# Above this share of the available memory a run is likely to be killed when anything else grows
# (real workers peaked 7% above the estimate, see above).
TIGHT_FRACTION = 0.9


@dataclass(frozen=True)
class Finding:
    level: str  # "error": do not start; "warning": start, but say it
    message: str  # one line


@dataclass(frozen=True)
class MachineResources:
    cores: int  # CPU cores this process may use
    gpus: int  # CUDA devices visible
    ram_available: int  # bytes
    ram_source: str  # where ram_available comes from, for messages


@dataclass(frozen=True)
class ModelSize:
    """What the RAM estimate needs to know about one training process."""

    parameters: int  # of the model being trained
    encoding_dim: int  # D
    nhead: int
    num_layers: int  # encoder layers per cascade stage
    num_stages: int  # --num_transformer_layers
    dim_feedforward: int
    dropout: float
    batch_size: int  # items per process
    latent_frames: int  # T: codec.num_frames(segment samples)
    audio_samples: int  # segment samples with --loss_domain audio, else 0


@dataclass(frozen=True)
class RamEstimate:
    per_process: int  # private bytes of one training process
    per_item: int  # of which each batch item takes this many
    shared: int  # bytes shared by all processes of a machine
    lower_bound: bool  # True when a part could not be estimated (CUDA runtime)

    def total(self, processes: int) -> int:
        return self.shared + processes * self.per_process


def stage_widths(encoding_dim: int, num_stages: int) -> list[int]:
    """Channels each cascade stage's encoder sees: concat(input, target) first, then
    concat(input, previous output, target)."""
    if num_stages == 1:
        return [encoding_dim]
    return [2 * encoding_dim] + [3 * encoding_dim] * (num_stages - 1)


def activation_bytes_per_item(size: ModelSize) -> int:
    """Bytes one batch item adds to a CPU training step (see the module doc)."""
    frames = size.latent_frames
    per_frame = sum(
        size.num_layers * (WIDTH_FACTOR * width + FEEDFORWARD_FACTOR * size.dim_feedforward)
        for width in stage_widths(size.encoding_dim, size.num_stages)
    )
    per_frame += LATENT_FACTOR * size.encoding_dim
    total = 4 * frames * per_frame
    if size.dropout > 0:
        total += 4 * ATTENTION_FACTOR * size.nhead * frames**2 * size.num_layers * size.num_stages
    total += AUDIO_BYTES_PER_SAMPLE * size.audio_samples
    return int(total)


def estimate_process_ram(size: ModelSize, device_kind: str, world_size: int) -> RamEstimate:
    """Host RAM of one training process (``device_kind`` "cpu" or "cuda")."""
    if device_kind == "cuda":
        return RamEstimate(
            BASE_BYTES + RESUME_BYTES_PER_PARAM * size.parameters, 0, SHARED_BYTES, lower_bound=True
        )
    per_param = WEIGHT_BYTES_PER_PARAM + TRAINING_BYTES_PER_PARAM
    if world_size > 1:
        per_param += DDP_BYTES_PER_PARAM
    per_item = activation_bytes_per_item(size)
    per_process = (
        BASE_BYTES + STEP_FIXED_BYTES + per_param * size.parameters + size.batch_size * per_item
    )
    return RamEstimate(per_process, per_item, SHARED_BYTES, lower_bound=False)


def _gb(size: float) -> str:
    return f"{size / GIB:.1f} GiB"


def check_resources(
    world_size: int, device_kind: str, num_workers: int, machine: MachineResources, ram: RamEstimate
) -> list[Finding]:
    """Findings (errors first) for running ``world_size`` training processes on ``machine``."""
    findings: list[Finding] = []
    if device_kind == "cuda" and world_size > machine.gpus:
        findings.append(
            Finding(
                "error",
                f"--world_size {world_size} needs {world_size} GPUs "
                f"(one per process), {machine.gpus} visible",
            )
        )
    needed = ram.total(world_size)
    usage = (
        f"{world_size} process(es) need about {_gb(needed)} "
        f"({_gb(ram.per_process)} each + {_gb(ram.shared)} shared), "
        f"{_gb(machine.ram_available)} available ({machine.ram_source})"
    )
    advice = (
        "lower --world_size"
        if device_kind == "cuda"
        else f"lower --batch_size (each item takes about {ram.per_item / MIB:.0f} MiB) or "
        f"--world_size"
    )
    if needed > machine.ram_available:
        floor = "at least " if ram.lower_bound else ""
        findings.append(Finding("error", f"not enough memory: {floor}{usage}; {advice}"))
    elif not ram.lower_bound and needed > TIGHT_FRACTION * machine.ram_available:
        findings.append(
            Finding(
                "warning",
                f"memory is tight: {usage}; the run may be killed for memory, consider to {advice}",
            )
        )
    if device_kind == "cpu" and world_size > machine.cores:
        findings.append(
            Finding(
                "error",
                f"--world_size {world_size} CPU processes on "
                f"{machine.cores} core(s): use --world_size "
                f"{machine.cores} or fewer",
            )
        )
    elif device_kind == "cpu":
        processes = world_size * (1 + num_workers)
        if processes > machine.cores:
            findings.append(
                Finding(
                    "warning",
                    f"{world_size} training process(es) with "
                    f"{num_workers} DataLoader worker(s) each are "
                    f"{processes} processes on {machine.cores} "
                    f"core(s): they will slow each other down "
                    f"(lower --world_size or --num_workers)",
                )
            )
    return sorted(findings, key=lambda f: f.level != "error")


def check_batch_size(
    train_pairs: int, batch_size: int, world_size: int, drop_last: bool = False
) -> Finding | None:
    """A batch larger than what each process gets of the training set, or None."""
    per_process = math.ceil(train_pairs / world_size)
    if batch_size <= per_process:
        return None
    share = f"{train_pairs} training pairs over {world_size} process(es) give {per_process} each"
    if drop_last:
        return Finding(
            "error",
            f"--batch_size {batch_size} is larger than the data: {share}, "
            f"so no full batch exists (lower --batch_size to "
            f"{max(per_process, 1)} or less)",
        )
    return Finding(
        "warning",
        f"--batch_size {batch_size} is larger than the data: {share}, so "
        f"every step sees only {per_process} pair(s) (lower --batch_size "
        f"to {per_process} or add data)",
    )


# ----------------------------------------------------------------------------- probing


def parse_meminfo(text: str) -> int | None:
    """MemAvailable from /proc/meminfo, in bytes."""
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text in ("max", ""):
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _cgroup_dirs(cgroup_text: str, root: Path, controller: str) -> list[Path]:
    """Our cgroup's folder for ``controller`` (v2 when it is ""), then the mount root."""
    for line in cgroup_text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        controllers = parts[1].split(",") if parts[1] else [""]
        if controller in controllers:
            base = root / controller if controller else root
            return [base / parts[2].lstrip("/"), base]
    return []


def cgroup_memory_available(cgroup_text: str, root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes the memory cgroup still allows (limit - usage + page cache), None without a limit.

    cgroup v2 (memory.max / memory.current) and v1 (memory.limit_in_bytes / usage_in_bytes).
    """
    candidates = [
        (d, "memory.max", "memory.current", "file") for d in _cgroup_dirs(cgroup_text, root, "")
    ]
    candidates += [
        (d, "memory.limit_in_bytes", "memory.usage_in_bytes", "cache")
        for d in _cgroup_dirs(cgroup_text, root, "memory")
    ]
    for folder, limit_name, usage_name, cache_key in candidates:
        limit = _read_int(folder / limit_name)
        usage = _read_int(folder / usage_name)
        if limit is None or usage is None or limit >= 1 << 60:  # "no limit" in v1
            continue
        cache = 0
        try:
            for line in (folder / "memory.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == cache_key:
                    cache = int(value)
        except (OSError, ValueError):
            pass
        return max(0, limit - usage + cache)
    return None


def cgroup_cpu_limit(cgroup_text: str, root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs the cgroup's quota allows (v2 cpu.max, v1 cfs_quota_us / cfs_period_us)."""
    for folder in _cgroup_dirs(cgroup_text, root, ""):
        try:
            quota, period = (folder / "cpu.max").read_text().split()
        except (OSError, ValueError):
            continue
        if quota != "max":
            return int(quota) / int(period)
    for folder in _cgroup_dirs(cgroup_text, root, "cpu"):
        quota = _read_int(folder / "cpu.cfs_quota_us")
        period = _read_int(folder / "cpu.cfs_period_us")
        if quota is not None and quota > 0 and period:
            return quota / period
    return None


def probe_resources(gpus_visible: int) -> MachineResources:
    """This machine as this process sees it (affinity, cgroup limits, /proc/meminfo)."""
    try:
        cgroup_text = Path("/proc/self/cgroup").read_text()
    except OSError:
        cgroup_text = ""
    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    quota = cgroup_cpu_limit(cgroup_text)
    if quota is not None:
        cores = max(1, min(cores, math.floor(quota)))
    try:
        available = parse_meminfo(Path("/proc/meminfo").read_text())
    except OSError:
        available = None
    source = "MemAvailable"
    limited = cgroup_memory_available(cgroup_text)
    if limited is not None and (available is None or limited < available):
        available, source = limited, "cgroup memory limit"
    if available is None:
        available, source = 1 << 62, "unknown"
    return MachineResources(
        cores=cores, gpus=gpus_visible, ram_available=available, ram_source=source
    )
