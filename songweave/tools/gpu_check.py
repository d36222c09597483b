"""One-command check of the CUDA path, for anyone with a GPU (a few minutes):

    creative-gpu-check                       # every visible GPU; raw outputs in docs/bench/gpu/

1. training through the real launcher (`train_simple_ddp.py`) on a tiny synthetic dataset:
   --device cuda, one process per GPU (DDP over nccl with two or more), bf16 autocast,
   --compile true, the creative agent on; SIGTERM once the first epoch is done, which must
   stop it cleanly with a loadable checkpoint_last.pth;
2. --resume auto from that checkpoint: it must continue from the saved epoch to the end;
3. `creative-bench --device cuda --precision bf16 --compile` at the default model size: step time,
   MFU against the matmul peak measured in the same run, peak memory;
4. `creative-arrange --device cuda` on two generated 30 s songs with the trained checkpoint: the
   output length and the real-time factor.

Prints one summary table and exits 0 when every check passed, 1 when one failed, 2 on bad flags or
without a CUDA device. Every sub-check calls the tools through their command lines only, and writes
its raw output to OUT/<check>.log; the table goes to OUT/summary.txt and OUT/summary.json."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from songweave.runtime.cli import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    OneLineParser,
    module_command,
    module_env,
)

SAMPLE_RATE = 24_000


@dataclass
class GpuCheckConfig:
    out: str = "docs/bench/gpu"
    world_size: int = 0  # training processes; 0 = one per visible GPU
    timeout_s: float = 300.0  # wall-clock limit of each sub-check
    bench_steps: int = 10
    keep_work: bool = False  # keep the temporary dataset, checkpoints and arrangement
    # Fixed for the CLI (the GPU path under test); tests run the same checks on CPU.
    device: str = "cuda"
    precision: str = "bf16"
    compile: bool = True


@dataclass
class CheckResult:
    name: str
    ok: bool
    seconds: float
    summary: str  # one line: the figures, or what failed
    log: str = ""  # file with the raw output
    figures: dict = field(default_factory=dict)


@dataclass
class Workspace:
    """What the checks share: the folders, and what an earlier check left for a later one."""

    work: Path  # temporary: dataset, checkpoints, songs, arrangement
    out: Path  # raw outputs and the summary
    world_size: int
    stopped_epoch: int | None = None


class UsageError(ValueError):
    """A bad flag or a machine the check cannot run on: one line, exit status 2."""


# ---------------------------------------------------------------------------------------------
# Arguments and the machine


class _Parser(OneLineParser):
    def error(self, message: str) -> None:  # one line instead of usage + message, exit status 2
        raise UsageError(f"{message} (see --help)")


def parse_args(argv: list[str] | None = None) -> GpuCheckConfig:
    defaults = GpuCheckConfig()
    parser = _Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", default=defaults.out, help="folder for the raw outputs and the summary"
    )
    parser.add_argument(
        "--world_size",
        type=int,
        default=defaults.world_size,
        help="training processes, one per GPU (0 = every visible GPU)",
    )
    parser.add_argument(
        "--timeout_s",
        type=float,
        default=defaults.timeout_s,
        help="wall-clock limit of each sub-check (seconds)",
    )
    parser.add_argument(
        "--bench_steps", type=int, default=defaults.bench_steps, help="timed creative-bench steps"
    )
    parser.add_argument(
        "--keep_work",
        action="store_true",
        help="keep the temporary dataset, checkpoints and arrangement (path is printed)",
    )
    config = GpuCheckConfig(**vars(parser.parse_args(argv)))
    problems = [
        message
        for failed, message in (
            (config.world_size < 0, f"--world_size must be >= 0, got {config.world_size}"),
            (not config.timeout_s > 0, f"--timeout_s must be > 0, got {config.timeout_s}"),
            (config.bench_steps < 1, f"--bench_steps must be >= 1, got {config.bench_steps}"),
        )
        if failed
    ]
    if problems:
        raise UsageError("; ".join(problems))
    return config


def cuda_world_size(requested: int) -> int:
    """Training processes to run: one per GPU. Raises UsageError without CUDA or GPUs enough."""
    import torch

    if not torch.cuda.is_available():
        raise UsageError(
            "no CUDA device is available (torch.cuda.is_available() is False): "
            "run creative-gpu-check on a machine with an NVIDIA GPU and a CUDA build of torch"
        )
    count = torch.cuda.device_count()
    if requested > count:
        raise UsageError(f"--world_size {requested} needs {requested} GPUs, {count} visible")
    return requested or count


# ---------------------------------------------------------------------------------------------
# Synthetic data


def tone_mix(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Mono float32 at SAMPLE_RATE: a few harmonic tones with decays plus a little noise."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    audio = 0.01 * rng.standard_normal(t.size)
    for _ in range(4):
        onset = rng.uniform(0, seconds / 2)
        envelope = np.where(t >= onset, np.exp(-2.0 * (t - onset)), 0.0)
        f0 = 110.0 * 2 ** (rng.integers(0, 36) / 12)
        for harmonic in range(1, 4):
            audio += envelope * np.sin(2 * np.pi * f0 * harmonic * t) / harmonic
    return (0.12 * audio / max(np.sqrt(np.mean(audio**2)), 1e-9)).astype(np.float32)


def write_dataset(
    folder: Path, train_pairs: int = 32, val_pairs: int = 8, seconds: float = 0.5
) -> Path:
    """DATA/{train,val}/pair_NNNNN_{input,output}.wav, the layout creative-prepare-pairs writes."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    for split, count in (("train", train_pairs), ("val", val_pairs)):
        (folder / split).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            for role in ("input", "output"):
                sf.write(
                    folder / split / f"pair_{index:05d}_{role}.wav",
                    tone_mix(seconds, rng),
                    SAMPLE_RATE,
                    subtype="FLOAT",
                )
    return folder


def write_song(path: Path, seconds: float, seed: int) -> Path:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone_mix(seconds, np.random.default_rng(seed)), SAMPLE_RATE, subtype="PCM_16")
    return path


# ---------------------------------------------------------------------------------------------
# Running the tools


def run_logged(command: list[str], log_path: Path, timeout_s: float) -> tuple[int, str]:
    """Run to completion; (exit status, output). The output also goes to log_path. A timeout is
    exit status 124, as with coreutils' timeout."""
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=module_env(),
            check=False,
        )
        status, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as expired:
        status = 124
        output = (
            _text(expired.stdout)
            + _text(expired.stderr)
            + f"\ngpu_check: killed after {timeout_s:.0f} s\n"
        )
    log_path.write_text(f"$ {' '.join(command)}\n{output}")
    return status, output


def _text(data: bytes | str | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def training_args(config: GpuCheckConfig, space: Workspace, epochs: int) -> list[str]:
    """A small creative-agent model that trains in seconds per epoch on one GPU."""
    return [
        "--dataset_folder",
        str(space.work / "data"),
        "--checkpoint_dir",
        str(space.work / "run"),
        "--device",
        config.device,
        "--world_size",
        str(space.world_size),
        "--precision",
        config.precision,
        "--compile",
        str(config.compile).lower(),
        "--use_creative_agent",
        "true",
        "--num_transformer_layers",
        "2",
        "--num_layers",
        "2",
        "--model_option",
        "dim_feedforward=512",
        "--model_option",
        "agent_hidden_dim=64",
        "--batch_size",
        "4",
        "--epochs",
        str(epochs),
        "--num_workers",
        "1",
        "--warmup_steps",
        "2",
        "--log_every",
        "1",
        "--sync_every",
        "1",
        "--tensorboard",
        "false",
    ]


def metrics_epochs(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    epochs = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line being written
            continue
        if "epoch" in record:
            epochs.append(int(record["epoch"]))
    return epochs


def checkpoint_epoch(path: Path) -> int:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if not all(
        torch.isfinite(t).all() for t in state["model_state_dict"].values() if t.is_floating_point()
    ):
        raise ValueError(f"{path}: non-finite weights")
    return int(state["epoch"])


# ---------------------------------------------------------------------------------------------
# The checks


def check_training_stops_on_sigterm(config: GpuCheckConfig, space: Workspace) -> CheckResult:
    """Train until epoch 1 is logged, SIGTERM the launcher: clean exit, loadable checkpoint."""
    name, start = "train + SIGTERM", time.perf_counter()
    log_path = space.out / "train.log"
    write_dataset(space.work / "data")
    run_dir = space.work / "run"
    command = module_command("train_simple_ddp", *training_args(config, space, epochs=1000))
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=module_env()
    )
    reason = ""
    try:
        deadline = time.monotonic() + config.timeout_s
        while process.poll() is None and max(metrics_epochs(run_dir), default=0) < 1:
            if time.monotonic() > deadline:
                reason = f"no epoch finished within {config.timeout_s:.0f} s"
                break
            time.sleep(0.5)
        if process.poll() is None and not reason:
            process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=120 if not reason else 5)
    except subprocess.TimeoutExpired:
        reason = reason or "did not exit within 120 s of SIGTERM"
        process.kill()
        output, _ = process.communicate()
    finally:
        if process.poll() is None:
            process.kill()
    log_path.write_text(f"$ {' '.join(command)}\n{output}")
    seconds = time.perf_counter() - start
    if not reason and process.returncode != 0:
        reason = f"launcher exited with status {process.returncode}"
    if not reason and "stopped by signal" not in output:
        reason = "no 'stopped by signal' message: SIGTERM arrived after training ended?"
    if reason:
        return CheckResult(name, False, seconds, f"{reason} (see {log_path.name})", str(log_path))
    try:
        space.stopped_epoch = checkpoint_epoch(run_dir / "checkpoint_last.pth")
    except (OSError, KeyError, RuntimeError, ValueError) as error:
        return CheckResult(
            name, False, seconds, f"checkpoint_last.pth unusable: {error}", str(log_path)
        )
    backend = (
        "nccl"
        if "nccl" in output
        else ("single process" if space.world_size == 1 else "backend not logged")
    )
    summary = (
        f"{space.world_size} process(es), {backend}, {config.precision}, compile {config.compile}: "
        f"stopped cleanly after epoch {space.stopped_epoch}"
    )
    return CheckResult(
        name,
        True,
        seconds,
        summary,
        str(log_path),
        {"stopped_epoch": space.stopped_epoch, "backend": backend},
    )


def check_resume_continues(config: GpuCheckConfig, space: Workspace) -> CheckResult:
    """--resume auto from the SIGTERM checkpoint must run on to stopped_epoch + 2, not restart."""
    name, start = "resume", time.perf_counter()
    log_path = space.out / "resume.log"
    if space.stopped_epoch is None:
        return CheckResult(name, False, 0.0, "skipped: the training check left no checkpoint", "")
    target = space.stopped_epoch + 2
    command = module_command(
        "train_simple_ddp", *training_args(config, space, epochs=target), "--resume", "auto"
    )
    status, output = run_logged(command, log_path, config.timeout_s)
    seconds = time.perf_counter() - start
    run_dir = space.work / "run"
    epochs = metrics_epochs(run_dir)
    if status != 0:
        return CheckResult(
            name, False, seconds, f"exit status {status} (see {log_path.name})", str(log_path)
        )
    if "resumed from" not in output:
        return CheckResult(
            name, False, seconds, "no 'resumed from' message: it started afresh", str(log_path)
        )
    if epochs[-1:] != [target] or epochs != sorted(epochs) or len(set(epochs)) != len(epochs):
        return CheckResult(
            name,
            False,
            seconds,
            f"metrics.jsonl epochs {epochs}, expected a run on to {target}",
            str(log_path),
        )
    final = checkpoint_epoch(run_dir / "checkpoint_last.pth")
    summary = f"continued from epoch {space.stopped_epoch} to {final} (metrics epochs {epochs})"
    return CheckResult(
        name, final == target, seconds, summary, str(log_path), {"final_epoch": final}
    )


def check_bench(config: GpuCheckConfig, space: Workspace) -> CheckResult:
    """creative-bench at the default size on the GPU: step time, MFU, peak memory."""
    name, start = "bench", time.perf_counter()
    log_path, json_path = space.out / "bench.log", space.out / "bench.json"
    flags = [
        "--device",
        config.device,
        "--precision",
        config.precision,
        "--steps",
        str(config.bench_steps),
        "--warmup",
        "3",
        "--json",
        str(json_path),
    ] + (["--compile"] if config.compile else [])
    command = module_command("songweave.bench.main", *flags)
    status, _ = run_logged(command, log_path, config.timeout_s)
    seconds = time.perf_counter() - start
    if status != 0 or not json_path.is_file():
        return CheckResult(
            name, False, seconds, f"exit status {status} (see {log_path.name})", str(log_path)
        )
    result = json.loads(json_path.read_text())
    figures = {
        "step_s": result["step_time_s"]["median"],
        "mfu": result["mfu"],
        "peak_matmul_gflops": result["peak_matmul_gflops"],
        "peak_memory_gib": result["peak_memory_gib"],
        "latent_frames_per_s": result["latent_frames_per_s"],
        "device": result["device"],
    }
    summary = (
        f"{figures['device']}: step {figures['step_s'] * 1e3:.1f} ms, "
        f"MFU {100 * figures['mfu']:.1f} % of {figures['peak_matmul_gflops']:.0f} GFLOP/s, "
        f"peak {figures['peak_memory_gib']:.2f} GiB"
    )
    ok = figures["mfu"] > 0 and figures["step_s"] > 0
    return CheckResult(name, ok, seconds, summary, str(log_path), figures)


def check_arrange(config: GpuCheckConfig, space: Workspace) -> CheckResult:
    """creative-arrange on the GPU with the trained checkpoint: output length, real-time factor."""
    import soundfile as sf

    name, start = "arrange", time.perf_counter()
    log_path = space.out / "arrange.log"
    checkpoint = space.work / "run" / "checkpoint_last.pth"
    if not checkpoint.is_file():
        return CheckResult(name, False, 0.0, "skipped: no trained checkpoint", "")
    song_a = write_song(space.work / "songs" / "a.wav", 30.0, seed=1)
    song_b = write_song(space.work / "songs" / "b.wav", 20.0, seed=2)
    output = space.work / "arrangement.wav"
    command = module_command(
        "songweave.inference.arrange",
        "--checkpoint",
        str(checkpoint),
        "--input",
        str(song_a),
        "--target",
        str(song_b),
        "--output",
        str(output),
        "--device",
        config.device,
        "--progress",
        "false",
    )
    status, text = run_logged(command, log_path, config.timeout_s)
    seconds = time.perf_counter() - start
    if status != 0 or not output.is_file():
        return CheckResult(
            name, False, seconds, f"exit status {status} (see {log_path.name})", str(log_path)
        )
    frames, expected = sf.info(output).frames, sf.info(song_a).frames
    factor = re.search(r"real-time factor ([0-9.]+)x", text)
    figures = {"real_time_factor": float(factor.group(1)) if factor else None, "frames": frames}
    summary = (
        f"30 s song: {frames} samples (input {expected}), real-time factor "
        f"{figures['real_time_factor'] if factor else '?'}x"
    )
    return CheckResult(name, frames == expected, seconds, summary, str(log_path), figures)


CHECKS: tuple[Callable[[GpuCheckConfig, Workspace], CheckResult], ...] = (
    check_training_stops_on_sigterm,
    check_resume_continues,
    check_bench,
    check_arrange,
)


# ---------------------------------------------------------------------------------------------
# Report


def summary_table(results: list[CheckResult]) -> str:
    width = max(len(r.name) for r in results)
    lines = [f"{'check':<{width}}  result  seconds  summary"]
    lines += [
        f"{r.name:<{width}}  {'ok' if r.ok else 'FAILED':<6}  {r.seconds:7.1f}  {r.summary}"
        for r in results
    ]
    return "\n".join(lines)


def run_checks(config: GpuCheckConfig, world_size: int) -> list[CheckResult]:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    space = Workspace(work, out, world_size)
    results = []
    try:
        for check in CHECKS:
            try:
                results.append(check(config, space))
            except Exception as error:  # noqa: BLE001 (a broken check must not hide the others)
                results.append(
                    CheckResult(check.__name__, False, 0.0, f"{type(error).__name__}: {error}")
                )
            print(
                f"gpu_check: {results[-1].name}: {'ok' if results[-1].ok else 'FAILED'}", flush=True
            )
    finally:
        if config.keep_work:
            print(f"gpu_check: work folder kept: {work}")
        else:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    table = summary_table(results)
    (out / "summary.txt").write_text(table + "\n")
    (out / "summary.json").write_text(
        json.dumps(
            {
                "config": asdict(config),
                "world_size": world_size,
                "results": [asdict(r) for r in results],
            },
            indent=1,
        )
        + "\n"
    )
    return results


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse_args(argv)
        world_size = cuda_world_size(config.world_size)
    except UsageError as error:
        print(f"gpu_check: {error}", file=sys.stderr)
        return EXIT_USAGE
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    results = run_checks(config, world_size)
    print(summary_table(results))
    print(f"raw outputs: {config.out}")
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


if __name__ == "__main__":
    from songweave.runtime.cli import run_module

    run_module(main, "songweave.tools.gpu_check")
