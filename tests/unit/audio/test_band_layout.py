"""Tests for songweave/audio/band_layout.py: mel bands, pooling to band-windows and spreading
back."""

import math
import subprocess
import sys

import pytest
import torch
from helpers import ROOT

from songweave.audio.band_layout import (
    BandLayout,
    build_layout,
    describe_layout,
    keep_spread_out_of_compiled_graphs,
    layout_for_codec,
    layout_kind_for_codec,
)


def _mel(frequency_hz: float) -> float:
    return 2595.0 * math.log10(1.0 + frequency_hz / 700.0)


def test_mel_layout_follows_the_definition_at_128_bins_24_khz():
    layout = BandLayout.mel(128, 24_000)
    assert layout.kind == "mel" and layout.dim == 128 and layout.num_bands == 24
    # Independent recomputation: band of bin k = floor(mel(centre_k) / (mel(12 kHz) / 24)).
    width = _mel(12_000.0) / 24
    expected = [min(int(_mel((k + 0.5) * 12_000.0 / 128) // width), 23) for k in range(128)]
    assert list(layout.band_of_channel) == expected  # no band is empty at this size
    sizes = layout.band_sizes()
    assert sum(sizes) == 128 and sizes[0] == 1 and sizes[-1] > 10
    assert (layout.window_frames, layout.transition_frames) == (9, 2)


def test_mel_layout_drops_empty_bands():
    layout = BandLayout.mel(16, 24_000)  # 16 bins cannot fill 24 mel bands
    assert layout.num_bands < 24
    assert set(layout.band_of_channel) == set(range(layout.num_bands))
    assert all(size > 0 for size in layout.band_sizes())


def test_time_layout_is_one_band_of_all_channels():
    layout = BandLayout.time(128, window_frames=4)
    assert layout.num_bands == 1 and layout.band_sizes() == (128,)
    x = torch.randn(2, 128, 8)
    pooled = layout.pool(x, drop_incomplete=True)
    assert torch.allclose(pooled, x.unflatten(-1, (2, 4)).mean(dim=(1, 3))[:, None], atol=1e-6)


def test_pool_is_the_mean_over_band_channels_and_window_frames():
    layout = BandLayout("mel", (0, 0, 1), window_frames=2, transition_frames=0)
    x = torch.arange(15, dtype=torch.float32).reshape(1, 3, 5)  # rows 0-4, 5-9, 10-14
    kept = layout.pool(x, drop_incomplete=False)
    # Band 0 = mean of rows 0 and 1; windows (0,1), (2,3), (4) -> the last has one frame.
    assert kept.tolist() == [[[3.0, 5.0, 6.5], [10.5, 12.5, 14.0]]]
    dropped = layout.pool(x, drop_incomplete=True)
    assert torch.equal(dropped, kept[..., :2])


def test_pool_passes_gradients_and_runs_in_bfloat16():
    layout = BandLayout.mel(32, 24_000, window_frames=4)
    x = torch.randn(2, 32, 12, requires_grad=True)
    layout.pool(x, drop_incomplete=False).sum().backward()
    sizes = torch.tensor(layout.band_sizes(), dtype=torch.float32)
    expected = 1.0 / (sizes[list(layout.band_of_channel)] * 4)
    assert torch.allclose(x.grad[0, :, 0], expected)
    pooled = layout.pool(x.detach().bfloat16(), drop_incomplete=True)
    assert pooled.dtype == torch.bfloat16 and pooled.shape == (2, layout.num_bands, 3)


@pytest.mark.parametrize("num_frames", [27, 31])
def test_pool_undoes_spread_without_transitions(num_frames):
    layout = BandLayout.mel(64, 24_000, window_frames=9, transition_frames=0)
    windows = layout.num_windows(num_frames, drop_incomplete=False)
    values = torch.rand(2, layout.num_bands, windows)
    cells = layout.spread(values, num_frames)
    assert cells.shape == (2, 64, num_frames)
    assert torch.allclose(layout.pool(cells, drop_incomplete=False), values, atol=1e-6)
    # ... and spread undoes pool for masks that are constant per band-window.
    assert torch.allclose(
        layout.spread(layout.pool(cells, drop_incomplete=False), num_frames), cells
    )


def test_spread_crossfades_linearly_at_inner_window_boundaries_only():
    layout = BandLayout("time", (0, 0), window_frames=6, transition_frames=4)
    values = torch.tensor([[[0.0, 1.0, 0.0, 1.0]]])  # windows 0-5, 6-11, 12-17, 18-21
    row = layout.spread(values, 22)[0, 0]
    assert torch.equal(row, layout.spread(values, 22)[0, 1])
    fractional = ((row > 0) & (row < 1)).nonzero().flatten().tolist()
    # Four frames around each inner boundary (6, 12, 18), none at the start or the end.
    assert fractional == [b + k for b in (6, 12, 18) for k in (-2, -1, 0, 1)]
    assert row[4:8].tolist() == [0.125, 0.375, 0.625, 0.875]
    assert row[0] == 0.0 and row[-1] == 1.0
    # Linear with weights summing to 1: the complement spreads to the complement.
    assert torch.allclose(layout.spread(1 - values, 22), 1 - layout.spread(values, 22))


def test_spread_keeps_band_window_values_away_from_transitions():
    layout = BandLayout.mel(128, 24_000)  # 9-frame windows, 2-frame transitions
    values = torch.rand(3, 24, 5)
    cells = layout.spread(values, 41)  # the last window holds 5 frames
    for band in range(24):
        channels = [k for k, b in enumerate(layout.band_of_channel) if b == band]
        assert torch.equal(cells[:, channels], cells[:, channels[:1]].expand(-1, len(channels), -1))
        for window in range(5):
            # Frames more than one frame away from the window's inner boundaries.
            start, stop = window * 9 + (1 if window else 0), min(window * 9 + 8, 41)
            inside = cells[:, channels[0], start:stop]
            assert torch.equal(inside, values[:, band, window : window + 1].expand_as(inside))


def test_constants_built_under_inference_mode_serve_autograd_later():
    layout = BandLayout.mel(24, 24_000, window_frames=3)
    with torch.inference_mode():
        layout.spread(layout.pool(torch.rand(1, 24, 10), False), 10)
    values = torch.rand(1, layout.num_bands, 4, requires_grad=True)
    layout.pool(layout.spread(values, 10), drop_incomplete=False).sum().backward()
    assert values.grad is not None and torch.isfinite(values.grad).all()


def test_codec_layouts_and_descriptions():
    assert layout_kind_for_codec("mdct") == "mel" and layout_kind_for_codec("encodec") == "time"
    mdct = layout_for_codec("mdct", 128, 24_000)
    assert mdct == BandLayout.mel(128, 24_000)
    assert layout_for_codec("encodec", 128, 24_000, window_frames=4) == BandLayout.time(128, 4)
    assert build_layout("time", 8, 24_000).num_bands == 1
    assert (
        describe_layout(mdct, 187.5)
        == "mel: 24 bands over 128 channels, windows of 9 frames (48 ms)"
    )
    assert hash(mdct) == hash(BandLayout.mel(128, 24_000))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: BandLayout.mel(128, 24_000, bands=0), "bands must be"),
        (lambda: BandLayout.mel(0, 24_000), "dim must be"),
        (lambda: BandLayout.mel(128, 24_000, window_frames=0), "window_frames must be"),
        (lambda: BandLayout.mel(128, 24_000, window_frames=4, transition_frames=5), "transition"),
        (lambda: BandLayout("mel", (0, 2)), "band_of_channel"),
        (lambda: build_layout("bark", 128, 24_000), "unknown mask layout"),
        (lambda: layout_for_codec("wav2vec", 128, 24_000), "no mask layout for codec"),
    ],
)
def test_bad_layouts_are_one_line_errors(build, message):
    with pytest.raises(ValueError, match=message) as info:
        build()
    assert "\n" not in str(info.value)


def test_bad_shapes_are_one_line_errors():
    layout = BandLayout.mel(16, 24_000, window_frames=4)
    for call, message in [
        (lambda: layout.pool(torch.rand(1, 8, 8), True), r"expected \[B, 16, T\]"),
        (lambda: layout.pool(torch.rand(1, 16, 3), True), "no complete window"),
        (lambda: layout.spread(torch.rand(1, 3, 2), 8), "expected band values"),
        (lambda: layout.spread(torch.rand(1, layout.num_bands, 2), 9), "need 3 windows"),
    ]:
        with pytest.raises(ValueError, match=message) as info:
            call()
        assert "\n" not in str(info.value)


def test_importing_the_layout_leaves_torch_dynamo_unloaded():
    # torch._dynamo costs about 2 s of start-up; only compiling should load it.
    code = (
        "import sys\n"
        "from songweave.audio import band_layout\n"
        "from songweave.inference import arrange\n"
        "print('torch._dynamo' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_spread_kept_out_of_compiled_graphs_is_the_same_function(monkeypatch):
    monkeypatch.setattr(BandLayout, "spread", BandLayout.spread)  # restored after the test
    layout = BandLayout.mel(32, 24_000, bands=4, window_frames=6)
    values = torch.rand(2, 4, 3)
    eager = layout.spread(values, 18)
    keep_spread_out_of_compiled_graphs()
    keep_spread_out_of_compiled_graphs()  # idempotent
    assert getattr(BandLayout.spread, "_outside_compiled_graphs", False)
    assert torch.equal(layout.spread(values, 18), eager)
