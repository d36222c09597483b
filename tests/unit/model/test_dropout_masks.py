"""songweave/model/dropout_masks.py: the 16-bit-at-a-time draw is the 32-bit threshold rule; masks
in any dtype."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model_simple_transformer import fast_dropout
from songweave.model import dropout_masks
from songweave.model.dropout_masks import (
    MASK_CHUNK,
    draw_dropout_mask,
    drop_threshold,
    keep_from_halves,
    keep_mask_u8,
)


@pytest.mark.parametrize(
    "drop", [0, 1, 12345, 0x1999999A, 0x7FFF0000, 0x7FFFFFFF, 0xFFFF0000, 2**32 - 1]
)
def test_high_halves_and_tie_low_halves_decide_as_the_32_bit_number(drop):
    rng = np.random.default_rng(drop % 1000)
    count = 50_000
    high = rng.integers(0, 2**16, count, dtype=np.uint16)
    high[::7] = drop >> 16  # many ties with the threshold's high half
    low = rng.integers(0, 2**16, count, dtype=np.uint16)
    low[::11] = drop & 0xFFFF  # and exact hits on its low half
    ties = np.flatnonzero(high == drop >> 16)
    requested = []

    def low_words(n: int) -> np.ndarray:
        requested.append(n)
        return low[ties]

    keep = np.empty(count, dtype=bool)
    keep_from_halves(high, drop, low_words, keep)
    expected = (high.astype(np.uint64) << 16 | low) >= drop
    np.testing.assert_array_equal(keep, expected)
    assert requested == [ties.size]  # low halves are drawn for the ties only


def test_threshold_is_p_to_2_to_the_minus_32():
    assert drop_threshold(0.0) == 0 and drop_threshold(1.0) == 2**32
    assert drop_threshold(0.1) == round(0.1 * 2**32)
    keep = np.empty(100, dtype=bool)
    keep_from_halves(np.zeros(100, np.uint16), 2**32, lambda n: np.zeros(n, np.uint16), keep)
    assert not keep.any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_scaled_mask_holds_zero_or_the_scale_in_its_dtype(dtype):
    torch.manual_seed(0)
    shape = (3, MASK_CHUNK + 5)  # several chunks, and a partial one
    keep, mask = draw_dropout_mask(shape, 0.1, dtype)
    assert mask.shape == keep.shape == shape and mask.dtype == dtype and keep.dtype == torch.bool
    assert torch.equal(mask != 0, keep)
    scale = torch.tensor(1 / 0.9, dtype=dtype)
    assert set(torch.unique(mask).tolist()) == {0.0, scale.item()}
    kept = (mask != 0).double().mean().item()
    assert abs(kept - 0.9) < 6 * (0.09 / mask.numel()) ** 0.5
    flat = (mask != 0).view(-1)
    chunks = flat[: 3 * MASK_CHUNK].view(3, MASK_CHUNK)
    assert not torch.equal(chunks[0], chunks[1])  # one stream, not one chunk repeated
    assert 0.8 < flat[-1000:].double().mean().item() < 1.0  # the tail is drawn too


def test_masks_follow_torch_manual_seed_and_differ_per_draw():
    torch.manual_seed(3)
    first = draw_dropout_mask((1000,), 0.5, torch.float32)[0]
    second = draw_dropout_mask((1000,), 0.5, torch.float32)[0]
    torch.manual_seed(3)
    assert torch.equal(draw_dropout_mask((1000,), 0.5, torch.float32)[0], first)
    assert not torch.equal(first, second)


def test_numpy_applied_masks_are_the_drawn_masks_on_any_thread_count():
    threads = torch.get_num_threads()
    x = torch.randn(2 * dropout_masks.SEGMENT + 5)
    try:
        torch.set_num_threads(1)
        one, keep = dropout_masks._apply_in_numpy(x, 0.1, seed=9)
        torch.set_num_threads(2)
        two, _ = dropout_masks._apply_in_numpy(x, 0.1, seed=9)
        again, _ = dropout_masks._apply_in_numpy(x, 0.1, keep=keep)  # the backward pass's way
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(keep, dropout_masks.keep_mask(9, x.numel(), 0.1))
    expected = x * torch.from_numpy(keep) * torch.tensor(1 / 0.9)
    for result in (one, two, again):
        assert torch.equal(result, expected)


def test_masks_are_the_same_for_any_number_of_threads():
    threads = torch.get_num_threads()
    shape = (3 * dropout_masks.SEGMENT + 11,)
    try:
        torch.set_num_threads(1)
        one = dropout_masks._draw_dropout_mask(5, shape, 0.1, torch.bfloat16)[1]
        torch.set_num_threads(3)
        three = dropout_masks._draw_dropout_mask(5, shape, 0.1, torch.bfloat16)[1]
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, three)
    segments = (one[: 3 * dropout_masks.SEGMENT] != 0).view(3, -1)
    assert not torch.equal(segments[0], segments[1])  # every segment has its own generator
    assert abs((one != 0).double().mean().item() - 0.9) < 0.001


def test_bool_and_scaled_masks_are_the_same_draw():
    count = dropout_masks.SEGMENT + 2 * MASK_CHUNK + 3
    flat_bool = dropout_masks.keep_mask(7, count, 0.25)
    keep, scaled = dropout_masks._draw_dropout_mask(7, (count,), 0.25, torch.float32)
    np.testing.assert_array_equal(flat_bool, keep.numpy())
    np.testing.assert_array_equal(flat_bool, (scaled != 0).numpy())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64, torch.float16])
def test_fast_dropout_gradient_is_the_mask_kept_in_at_most_two_bytes(dtype):
    torch.manual_seed(1)
    # Never exactly 0, so that "out != 0" is the kept set in every dtype.
    x = (torch.rand(4, 300) + 0.5).to(dtype).requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = fast_dropout(x, 0.2, True)
    numpy_float = dtype in (torch.float32, torch.float64)
    assert [t.dtype for t in saved] == [torch.bool if numpy_float else dtype]
    kept = out != 0
    scale = torch.tensor(1 / 0.8, dtype=dtype)
    torch.testing.assert_close(out[kept], x[kept] * scale)
    out.backward(torch.ones_like(out))
    torch.testing.assert_close(x.grad, kept.to(dtype) * scale)


def test_uint8_custom_op_matches_the_bool_draw_and_its_fake():
    seed = torch.tensor([11], dtype=torch.int64)
    mask = keep_mask_u8(seed, [5, 40_000], 0.1)
    assert mask.dtype == torch.uint8 and mask.shape == (5, 40_000)
    np.testing.assert_array_equal(mask.view(-1).numpy(), dropout_masks.keep_mask(11, 200_000, 0.1))
    torch.library.opcheck(
        keep_mask_u8, (seed, [3, 7], 0.1), test_utils=("test_schema", "test_faketensor")
    )


def test_dropout_inside_a_compiled_graph_uses_the_masks():
    # aot_eager traces the graph as inductor would, without compiling C++.
    def layer(x):
        return fast_dropout(x * 2.0, 0.1, True)

    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    x = torch.ones(64, 1000, requires_grad=True)
    torch.manual_seed(0)
    out = compiled(x)
    kept = out != 0
    assert abs(kept.double().mean().item() - 0.9) < 0.01
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 2.0 / 0.9))
    out.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() * 2.0 / 0.9)
