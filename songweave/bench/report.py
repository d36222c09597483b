"""The benchmark's report: one JSON-ready dict of figures from the timed steps, and the readable
table printed before it."""

from __future__ import annotations

import os
import statistics
from dataclasses import asdict
from typing import Any

import torch

from songweave.bench.config import BenchConfig
from songweave.bench.measure import device_name, step_flops
from songweave.runtime.precision import native_bf16
from songweave.train.setup import TrainingRun

# =============================================================================================
# Report
# =============================================================================================


def summarize(
    bench: BenchConfig,
    trainer: TrainingRun,
    device: torch.device,
    step_times: list[float],
    wait_times: list[float],
    loss_s: float,
    peak: dict[str, Any],
    memory: tuple[int, str],
    end_to_end: dict[str, Any] | None,
    loads: tuple[float, float],
    cpu_times: list[float],
    wait_cpu_times: list[float],
    loss_cpu_s: float,
) -> dict[str, Any]:
    flops = step_flops(trainer.model.config, bench.batch_size, bench.seq_frames)
    median = statistics.median(step_times)
    data_s = statistics.median(wait_times) if wait_times else 0.0
    achieved = flops["step"] / median / 1e9
    result: dict[str, Any] = {
        "config": asdict(bench),
        "device": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_1min": {"start": loads[0], "end": loads[1]},
        "model_parameters": sum(p.numel() for p in trainer.model.parameters()),
        "steps_timed": len(step_times),
        "step_time_s": {"median": median, "min": min(step_times), "max": max(step_times)},
        "samples_per_s": bench.batch_size / median,
        "latent_frames_per_s": bench.batch_size * bench.seq_frames / median,
        "flops_per_step": flops["step"],
        "flops_breakdown": flops,
        "achieved_gflops": achieved,
        "peak_matmul_gflops": peak["peak_gflops"],
        "peak_matmul_dtype": bench.precision,
        "native_bf16_matmul": native_bf16(device)[0],
        "peak_matmul_shapes": peak["shapes"],
        "mfu": achieved / peak["peak_gflops"],
        "data_s_per_step": data_s,
        "codec_and_loss_s_per_step": loss_s,
        "outside_model_s_per_step": data_s + loss_s,
        "outside_model_share": (data_s + loss_s) / median,
        "peak_memory_bytes": memory[0],
        "peak_memory_gib": memory[0] / 2**30,
        "peak_memory_kind": memory[1],
    }
    # Process CPU time is the compute time only with one thread and no DataLoader workers.
    if (
        device.type == "cpu"
        and torch.get_num_threads() == 1
        and not (bench.end_to_end and bench.num_workers)
    ):
        cpu_median = statistics.median(cpu_times)
        data_cpu_s = statistics.median(wait_cpu_times) if wait_cpu_times else 0.0
        result["cpu_time"] = {
            "step_s": {"median": cpu_median, "min": min(cpu_times), "max": max(cpu_times)},
            "achieved_gflops": flops["step"] / cpu_median / 1e9,
            "peak_matmul_gflops": peak["peak_cpu_time_gflops"],
            "mfu": flops["step"] / cpu_median / 1e9 / peak["peak_cpu_time_gflops"],
            "data_s_per_step": data_cpu_s,
            "codec_and_loss_s_per_step": loss_cpu_s,
            "outside_model_share": (data_cpu_s + loss_cpu_s) / cpu_median,
        }
    if end_to_end is not None:
        result["end_to_end"] = {k: v for k, v in end_to_end.items() if k != "batch_example"}
    return result


def table(result: dict[str, Any]) -> str:
    c = result["config"]
    st = result["step_time_s"]
    rows = [
        (
            "configuration",
            f"batch {c['batch_size']} x {c['seq_frames']} frames, "
            f"{c['num_transformer_layers']} stages x "
            f"{c['num_layers']} layers, agent {'on' if c['use_creative_agent'] else 'off'}, "
            f"codec {c['codec']}, "
            f"loss {c['loss_domain']}, {c['precision']}{', compile' if c['compile'] else ''}"
            f"{', activation checkpointing' if c['activation_checkpointing'] else ''}"
            f"{', stock layers' if c['stock_layers'] else ''}"
            f"{', end to end' if c['end_to_end'] else ''}",
        ),
        (
            "device",
            f"{result['device']} (load avg {result['load_average_1min']['start']:.2f} -> "
            f"{result['load_average_1min']['end']:.2f})",
        ),
        (
            "step time",
            f"median {st['median'] * 1e3:.1f} ms (min {st['min'] * 1e3:.1f}, "
            f"max {st['max'] * 1e3:.1f}) over {result['steps_timed']} steps",
        ),
        (
            "throughput",
            f"{result['samples_per_s']:.2f} samples/s, "
            f"{result['latent_frames_per_s']:.0f} latent frames/s",
        ),
        ("FLOP per step", f"{result['flops_per_step'] / 1e9:.1f} GFLOP (3 x forward matmul FLOPs)"),
        ("achieved", f"{result['achieved_gflops']:.1f} GFLOP/s"),
        (
            "matmul peak",
            f"{result['peak_matmul_gflops']:.1f} GFLOP/s "
            f"({result['peak_matmul_dtype']} torch.mm, measured now)",
        ),
        ("MFU", f"{result['mfu'] * 100:.1f} %"),
        (
            "outside the model",
            f"{result['outside_model_share'] * 100:.1f} % of the step "
            f"(data {result['data_s_per_step'] * 1e3:.1f} ms, "
            f"codec + loss fwd/bwd {result['codec_and_loss_s_per_step'] * 1e3:.1f} ms)",
        ),
        ("peak memory", f"{result['peak_memory_gib']:.2f} GiB ({result['peak_memory_kind']})"),
    ]
    if "cpu_time" in result:
        ct = result["cpu_time"]
        rows.append(
            (
                "CPU time (1 thread)",
                f"step median {ct['step_s']['median'] * 1e3:.1f} ms, "
                f"{ct['achieved_gflops']:.1f} GFLOP/s of "
                f"{ct['peak_matmul_gflops']:.1f} peak: MFU {ct['mfu'] * 100:.1f} %, "
                "outside the model "
                f"{ct['outside_model_share'] * 100:.1f} % (immune to other users' load)",
            )
        )
    e2e = result.get("end_to_end")
    check = result.get("precision_check")
    if check:
        lower = c["precision"]
        rows.append(
            (
                "val loss",
                f"after {check['train_steps']} steps: fp32 {check['val_loss_fp32']:.4f}, {lower} "
                f"{check[f'val_loss_{lower}']:.4f} ({100 * check['relative_difference']:+.2f} %)",
            )
        )
    if e2e:
        rows.append(
            (
                "end to end",
                f"{e2e['num_pairs']} pairs, {e2e['num_workers']} workers, "
                f"cache build {e2e['cache_build_s']:.1f} s, "
                f"epoch median {e2e['epoch_s_median']:.2f} s, "
                f"data wait {100 * (e2e['data_wait_share'] or 0):.1f} % of the steps",
            )
        )
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")
