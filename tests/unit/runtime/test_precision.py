"""songweave/runtime/precision.py: "auto" is bf16 exactly where bf16 matrix multiplies are
native."""

from __future__ import annotations

import logging

import pytest
import torch

from songweave.runtime import precision
from songweave.runtime.precision import (
    autocast_for,
    choose_precision,
    cpu_bf16_flags,
    resolve_precision,
)

CPU = torch.device("cpu")


def _cpu_with(monkeypatch, **flags):
    capabilities = {"amx_bf16": False, "avx512_bf16": False, "avx2": True, **flags}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities, raising=False)


@pytest.mark.parametrize(
    "flags, expected",
    [
        ({"amx_bf16": True, "avx512_bf16": True}, "bf16"),
        ({"avx512_bf16": True}, "bf16"),  # e.g. AMD Zen 4: no AMX, native bf16 dot products
        ({}, "fp32"),  # e.g. AMD Zen 3: bf16 would be emulated
    ],
)
def test_auto_on_cpu_follows_the_bf16_flags(monkeypatch, flags, expected):
    _cpu_with(monkeypatch, **flags)
    choice = choose_precision("auto", CPU)
    assert choice.precision == expected
    assert choice.reason.startswith(f"auto -> {expected}: this CPU has")
    assert "\n" not in choice.reason


def test_explicit_requests_pass_through_and_say_when_bf16_is_slow(monkeypatch):
    _cpu_with(monkeypatch)
    assert choose_precision("fp32", CPU).precision == "fp32"
    slow = choose_precision("bf16", "cpu")
    assert slow.precision == "bf16" and "slow here" in slow.reason
    _cpu_with(monkeypatch, amx_bf16=True)
    assert "slow" not in choose_precision("bf16", CPU).reason


def test_cpuinfo_is_read_when_torch_cannot_tell(monkeypatch, tmp_path):
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile amx_bf16\n")
    assert cpu_bf16_flags(cpuinfo) == ("amx_bf16", "avx512_bf16")
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    assert cpu_bf16_flags(cpuinfo) == ()
    assert cpu_bf16_flags(tmp_path / "missing") == ()


@pytest.mark.parametrize(
    "capability, expected", [((8, 0), "bf16"), ((9, 0), "bf16"), ((7, 5), "fp32")]
)
def test_auto_on_cuda_follows_the_compute_capability(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Test GPU")
    choice = choose_precision("auto", torch.device("cuda", 0))
    assert choice.precision == expected
    assert f"compute capability {capability[0]}.{capability[1]}" in choice.reason


def test_auto_without_cuda_or_on_other_devices_is_fp32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_precision("auto", "cuda").precision == "fp32"
    assert choose_precision("auto", "meta").precision == "fp32"


def test_unknown_request_is_a_one_line_error():
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, got 'fp16'"):
        choose_precision("fp16", CPU)


def test_resolve_precision_returns_the_choice_and_logs_the_reason(monkeypatch, caplog):
    _cpu_with(monkeypatch, amx_bf16=True)
    with caplog.at_level(logging.INFO, logger="songweave.runtime.precision"):
        assert resolve_precision("auto", CPU) == "bf16"
    assert "precision bf16 (auto -> bf16: this CPU has amx_bf16)" in caplog.text


def test_auto_bf16_on_this_cpu_only_where_onednn_has_bf16():
    # oneDNN also reports bf16 on AVX-512 CPUs that emulate it, so only one direction holds.
    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        pytest.skip("this torch build cannot report oneDNN's bf16 support")
    if precision.native_bf16(CPU)[0]:
        assert onednn
    assert (choose_precision("auto", CPU).precision == "bf16") == precision.native_bf16(CPU)[0]


def test_autocast_for_bf16_runs_matmuls_in_bf16_and_fp32_changes_nothing():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast_for(CPU, "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with autocast_for("cpu", "fp32"):
        assert torch.equal(a @ b, a @ b) and (a @ b).dtype == torch.float32
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, got 'auto'"):
        autocast_for(CPU, "auto")  # resolve "auto" first
