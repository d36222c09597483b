"""What the benchmark measures a training step against: the analytic FLOPs of the model, the
device's measured matrix-multiply peak, and peak memory."""

from __future__ import annotations

import math
import resource
import time
from pathlib import Path
from typing import Any, Callable

import torch

# =============================================================================================
# Analytic FLOP count
# =============================================================================================


def transformer_layer_flops(
    tokens: int, batch: int, frames: int, width: int, feedforward: int
) -> dict[str, int]:
    """Forward FLOPs of one nn.TransformerEncoderLayer (a multiply-add = 2 FLOPs).

    QKV projections 2*N*C*3C, output projection 2*N*C*C, attention scores Q.K^T 2*B*T*T*C and
    attention-weighted values 2*B*T*T*C (summed over heads: heads * head_dim = C), feed-forward
    2*N*C*F + 2*N*F*C; N = B*T tokens, C the stage width, F dim_feedforward.
    """
    return {
        "qkv_out_projections": 2 * tokens * width * 3 * width + 2 * tokens * width * width,
        "attention_scores_values": 2 * 2 * batch * frames * frames * width,
        "feed_forward": 2 * 2 * tokens * width * feedforward,
    }


def agent_flops(tokens: int, batch: int, frames: int, dim: int, hidden: int) -> dict[str, int]:
    """Forward FLOPs of AttentionMaskGenerator (both songs; shared or not, the work is the same).

    Per song: analyzer Conv1d D->H (k=3) and H->H (k=3): 2*N*3*(D*H + H*H); mask head Conv1d
    2H->H (k=3) and H->D (k=1): 2*N*(3*2H*H + H*D). Per direction of cross-attention: query
    2*N*H*H, key/value 2*N*H*2H, output 2*N*H*H, scores and values 2*2*B*T*T*H.
    """
    per_song_convs = 2 * tokens * 3 * (dim * hidden + hidden * hidden) + 2 * tokens * (
        3 * 2 * hidden * hidden + hidden * dim
    )
    per_direction_projections = 2 * tokens * hidden * hidden * 4
    per_direction_attention = 2 * 2 * batch * frames * frames * hidden
    return {
        "agent_convs": 2 * per_song_convs,
        "agent_cross_attention_projections": 2 * per_direction_projections,
        "agent_cross_attention_scores_values": 2 * per_direction_attention,
    }


def band_pooling_flops(model_config: dict[str, Any], batch: int, frames: int) -> int:
    """The agent pools its claims to band-windows with one [K, D] x [D, W] matmul per batch item
    (one for the claim difference with shared weights, one per song otherwise)."""
    from songweave.audio.band_layout import build_layout

    dim = int(model_config["encoding_dim"])
    layout = build_layout(
        model_config.get("mask_layout", "mel"),
        dim,
        int(model_config.get("sample_rate", 24000)),
        int(model_config.get("mask_bands", 24)),
        int(model_config.get("mask_window_frames", 9)),
    )
    windows = math.ceil(frames / layout.window_frames)
    poolings = 1 if model_config.get("agent_shared_weights", True) else 2
    return poolings * 2 * batch * layout.num_bands * dim * windows


def step_flops(model_config: dict[str, Any], batch: int, frames: int) -> dict[str, int]:
    """Analytic FLOPs of one training step of SimpleTransformer(**model_config).

    forward = sum over stages (width C = D for one stage, else 2D for stage 0 and 3D after) of
    num_layers * transformer_layer_flops + the stage's output projection 2*N*C*D, plus
    agent_flops when the creative agent is on. training step = 3 * forward (the backward pass
    computes the gradients of both the inputs and the weights of every matmul: 2 * forward).
    Not counted: elementwise work (LayerNorm, GELU, softmax, dropout, masks, optimizer), the codec
    and the loss, which are not matrix multiplies (the MDCT decode in the audio loss is one, of
    2*N*D*2D FLOPs: under 0.3% of the default step).
    """
    dim = int(model_config["encoding_dim"])
    stages = int(model_config["num_transformer_layers"])
    layers = int(model_config["num_layers"])
    feedforward = int(model_config["dim_feedforward"])
    tokens = batch * frames
    widths = [dim] if stages == 1 else [2 * dim] + [3 * dim] * (stages - 1)
    forward: dict[str, int] = {}
    for width in widths:
        for name, value in transformer_layer_flops(
            tokens, batch, frames, width, feedforward
        ).items():
            forward[name] = forward.get(name, 0) + layers * value
        forward["stage_output_projections"] = (
            forward.get("stage_output_projections", 0) + 2 * tokens * width * dim
        )
    if model_config.get("use_creative_agent"):
        forward.update(
            agent_flops(tokens, batch, frames, dim, int(model_config["agent_hidden_dim"]))
        )
        forward["agent_band_pooling"] = band_pooling_flops(model_config, batch, frames)
    forward_total = sum(forward.values())
    return {
        "forward": forward_total,
        "step": 3 * forward_total,
        **{f"forward_{k}": v for k, v in forward.items()},
    }


# =============================================================================================
# Machine figures: matmul peak, memory
# =============================================================================================


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemm_shapes(
    model_config: dict[str, Any], batch: int, frames: int
) -> list[tuple[int, int, int]]:
    """(M, K, N) of the model's largest GEMMs: QKV, feed-forward in and out, per stage width."""
    dim = int(model_config["encoding_dim"])
    stages = int(model_config["num_transformer_layers"])
    feedforward = int(model_config["dim_feedforward"])
    tokens = batch * frames
    widths = sorted({dim} if stages == 1 else {2 * dim, 3 * dim})
    shapes = []
    for width in widths:
        shapes += [
            (tokens, width, 3 * width),
            (tokens, width, feedforward),
            (tokens, feedforward, width),
        ]
    return shapes


def _best_time(
    fn: Callable[[], Any],
    device: torch.device,
    repeats: int,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    fn()  # warm-up
    best = math.inf
    for _ in range(repeats):
        synchronize(device)
        start = clock()
        fn()
        synchronize(device)
        best = min(best, clock() - start)
    return best


def measure_matmul_peak(
    device: torch.device,
    dtype: torch.dtype,
    shapes: list[tuple[int, int, int]],
    repeats: int = 5,
    budget_s: float = 8.0,
) -> dict[str, Any]:
    """Best GFLOP/s over the given GEMM shapes in `dtype`, each the best of `repeats` runs of
    torch.mm and of F.linear (the model's projections go through the latter, which takes a
    different kernel for bf16 on CPU).

    Rows are cut (never below 256) where a shape would take longer than the time budget allows,
    e.g. bf16 on a CPU without native bf16 matmul, where the rate does not depend on the rows.
    """
    results = []
    per_shape_s = budget_s / max(1, len(shapes)) / (2 * repeats + 2)
    for rows, inner, cols in shapes:
        a = torch.randn(rows, inner, device=device).to(dtype)
        b = torch.randn(inner, cols, device=device).to(dtype)
        weight, bias = b.t().contiguous(), torch.zeros(cols, device=device, dtype=dtype)
        probe_rows = min(rows, 256)
        probe_s = _best_time(lambda: torch.mm(a[:probe_rows], b), device, 1)
        probe_rate = 2 * probe_rows * inner * cols / max(probe_s, 1e-9)
        rows_used = int(
            max(min(256, rows), min(rows, probe_rate * per_shape_s / (2 * inner * cols)))
        )
        a = a[:rows_used].contiguous()
        flop = 2 * rows_used * inner * cols
        mm_s = _best_time(lambda: torch.mm(a, b), device, repeats)
        linear_s = _best_time(lambda: torch.nn.functional.linear(a, weight, bias), device, repeats)
        result = {
            "shape": [rows_used, inner, cols],
            "mm_gflops": flop / mm_s / 1e9,
            "linear_gflops": flop / linear_s / 1e9,
        }
        if device.type == "cpu":
            cpu_s = min(
                _best_time(lambda: torch.mm(a, b), device, repeats, time.process_time),
                _best_time(
                    lambda: torch.nn.functional.linear(a, weight, bias),
                    device,
                    repeats,
                    time.process_time,
                ),
            )
            result["cpu_time_gflops"] = flop / max(cpu_s, 1e-9) / 1e9
        results.append(result)
    peak = max(max(r["mm_gflops"], r["linear_gflops"]) for r in results)
    peak_cpu = max((r["cpu_time_gflops"] for r in results if "cpu_time_gflops" in r), default=None)
    return {"peak_gflops": peak, "peak_cpu_time_gflops": peak_cpu, "shapes": results}


def best_peak(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """Shape by shape, the better of two peak measurements (noise only ever lowers a peak)."""
    shapes = []
    for a, b in zip(first["shapes"], second["shapes"]):
        shapes.append({key: max(a[key], b[key]) if key != "shape" else a[key] for key in a})
    cpu = [s["cpu_time_gflops"] for s in shapes if "cpu_time_gflops" in s]
    return {
        "peak_gflops": max(max(s["mm_gflops"], s["linear_gflops"]) for s in shapes),
        "peak_cpu_time_gflops": max(cpu) if cpu else None,
        "shapes": shapes,
    }


def reset_peak_memory(device: torch.device) -> None:
    """Start the peak-memory window here (setup allocations are not the step's)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux >= 4.0: writing 5 resets VmHWM (the peak resident set size) to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory_bytes(device: torch.device) -> tuple[int, str]:
    """(bytes, what was measured): CUDA max allocated, else the process's peak RSS."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "torch.cuda.max_memory_allocated"
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024, "peak RSS (VmHWM, reset before the timed steps)"
    except OSError:
        pass
    # ru_maxrss is in KiB on Linux and covers the whole process lifetime.
    return int(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ) * 1024, "peak RSS (ru_maxrss, whole process)"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    return f"cpu ({torch.get_num_threads()} threads)"
