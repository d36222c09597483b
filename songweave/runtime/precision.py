"""Which precision to compute in: "auto" picks bf16 where the hardware runs it natively.

    >>> resolve_precision("auto", torch.device("cpu"))  # "bf16" on AMX / avx512_bf16, else "fp32"

bf16 pays only where matrix multiplies run natively in it: on CPUs with AMX (amx_bf16, Intel
Sapphire Rapids and later) or AVX-512 BF16 (avx512_bf16, e.g. AMD Zen 4), and on NVIDIA GPUs of
compute capability 8.0 or more (A100, H100, RTX 30xx and later). Elsewhere oneDNN emulates bf16
(measured 30x slower than fp32 on a Zen 3 EPYC), so "auto" keeps fp32 there.

`choose_precision` returns the choice with a one-line reason for logs; `resolve_precision` returns
the precision alone and logs the reason; `autocast_for(device, precision)` is the context to run
a model in.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")
REQUESTS = ("auto",) + PRECISIONS
# CPU flags (as /proc/cpuinfo and torch.cpu.get_capabilities name them) that give native bf16
# matrix multiplies, in order of preference for the reason line.
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
MIN_CUDA_BF16_CAPABILITY = (8, 0)


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str  # "fp32" or "bf16"
    reason: str  # one line: why, for logs and benchmark records


def cpu_bf16_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, ...]:
    """The CPU_BF16_FLAGS this CPU has (empty when none or when nothing can tell)."""
    capabilities = _torch_cpu_capabilities()
    if capabilities is not None:
        return tuple(flag for flag in CPU_BF16_FLAGS if capabilities.get(flag))
    try:
        text = cpuinfo.read_text()
    except OSError:
        return ()
    for line in text.splitlines():
        if line.startswith("flags"):
            present = set(line.split(":", 1)[1].split())
            return tuple(flag for flag in CPU_BF16_FLAGS if flag in present)
    return ()


def _torch_cpu_capabilities() -> dict | None:
    # torch >= 2.6 reports cpuinfo's feature flags; older releases lack the function.
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is None:
        return None
    try:
        capabilities = get_capabilities()
    except RuntimeError:
        return None
    return capabilities if isinstance(capabilities, dict) else None


def choose_precision(requested: str, device: torch.device | str) -> PrecisionChoice:
    """Resolve "auto" (or pass "fp32" / "bf16" through) for `device`, with the reason."""
    if requested not in REQUESTS:
        raise ValueError(f"precision must be one of {', '.join(REQUESTS)}, got {requested!r}")
    device = torch.device(device)
    native, why = native_bf16(device)
    if requested == "fp32":
        return PrecisionChoice("fp32", "fp32 as requested")
    if requested == "bf16":
        note = "" if native else " (slow here: no native bf16 matrix multiply)"
        return PrecisionChoice("bf16", f"bf16 as requested: {why}{note}")
    return PrecisionChoice(
        "bf16" if native else "fp32", f"auto -> {'bf16' if native else 'fp32'}: {why}"
    )


def resolve_precision(requested: str, device: torch.device | str) -> str:
    """ "fp32" or "bf16" for `device` ("auto": bf16 where native, see the module doc); logs why."""
    choice = choose_precision(requested, device)
    log.info("precision %s (%s)", choice.precision, choice.reason)
    return choice.precision


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """(whether `device` multiplies bf16 matrices natively, why in a few words)."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False, "no CUDA device is available"
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        name = torch.cuda.get_device_name(index)
        supported = (major, minor) >= MIN_CUDA_BF16_CAPABILITY
        verdict = "has" if supported else "lacks"
        return supported, f"{name} (compute capability {major}.{minor}) {verdict} native bf16"
    if device.type == "cpu":
        flags = cpu_bf16_flags()
        if flags:
            return True, f"this CPU has {' and '.join(flags)}"
        return False, f"this CPU has neither {' nor '.join(CPU_BF16_FLAGS)}"
    return False, f"no native bf16 check for device type {device.type!r}"


def autocast_for(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` for precision "bf16"; for "fp32" a context that changes nothing.
    The caller keeps losses and codecs in fp32 (outside this context or with autocast disabled)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
