"""Dropout keep masks for CPU training, drawn with numpy's SFC64 generator.

torch's CPU dropout draws every element one at a time from one mt19937 stream (about 10 ns per
element, serial); SFC64 gives 64 random bits per call. Each mask's seed comes from torch's CPU
generator, so torch.manual_seed fixes the masks, and activation checkpointing (which replays
torch's RNG state) recomputes the same ones.

Every element is kept with probability 1 - round(p * 2**32) / 2**32, as with a 32-bit uniform
number U per element (keep when U >= round(p * 2**32)), but drawn 16 bits at a time: U's high
half decides unless it ties with the threshold's high half (probability 2**-16), and only the
ties draw their low half. Half the random bits of 32 per element, the same distribution. Masks
are drawn in segments of a million elements, each from its own generator, spread over torch's
intra-op threads (the mask is the same for any number of threads).

- `cpu_dropout(x, p)` (eager): fp32 (and fp64) tensors are multiplied by the mask in numpy, in
  the cache-sized chunks the mask is drawn in, and only the bool mask (1 byte per element) is
  kept for the backward pass, which applies it the same way. bf16 (no numpy dtype) gets the mask
  drawn in bf16, 0 or 1 / (1 - p) rounded to bf16 as x * scale would be, kept for the backward
  pass; applying it is one multiply each way. Both replace converting a bool mask and scaling it
  in torch, forward and backward.
- `keep_mask_u8(seed, shape, p)`: a 0/1 uint8 mask as a torch custom op, for compiled graphs:
  inductor fuses its conversion and scaling into the neighbouring kernels.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

# Elements decided per chunk: the chunk's random words, decisions and mask values stay in cache.
MASK_CHUNK = 1 << 16
# Elements per independently seeded segment: the unit of work spread over threads.
SEGMENT = 16 * MASK_CHUNK
# Profiler label of the mask work (numpy work is invisible to torch.profiler otherwise).
PROFILE_LABEL = "fast_dropout::keep_mask"

_HALF = 1 << 16
_UNSIGNED = {2: (torch.int16, np.uint16), 4: (torch.int32, np.uint32), 8: (torch.int64, np.uint64)}


def drop_threshold(p: float) -> int:
    """An element is dropped when its 32-bit uniform number is below this."""
    return min(round(p * 2**32), 2**32)


def keep_from_halves(
    high_words: np.ndarray, drop: int, low_words: Callable[[int], np.ndarray], out: np.ndarray
) -> None:
    """out[i] = (high_words[i] * 2**16 + low_i >= drop): the 16-bit low halves low_i are drawn,
    by `low_words(n)`, only for the n elements whose high half ties with drop's."""
    drop_high, drop_low = divmod(drop, _HALF)
    if drop_high >= _HALF:  # p rounds to 1: everything dropped
        out[...] = False
        return
    np.greater_equal(high_words, drop_high, out=out)
    ties = np.flatnonzero(high_words == drop_high)
    if ties.size:
        out[ties] = low_words(ties.size) >= drop_low


def _decide(generator: np.random.SFC64, drop: int, out: np.ndarray) -> None:
    count = out.size
    high_words = generator.random_raw((count + 3) // 4).view(np.uint16)[:count]
    # The low 16 bits of one fresh 64-bit word per tie (uint64 -> uint16 keeps the low bits).
    keep_from_halves(high_words, drop, lambda n: generator.random_raw(n).astype(np.uint16), out)


def _seed_from_torch() -> int:
    return int(torch.randint(0, 2**62, (1,)).item())  # CPU generator: no device sync


def keep_mask(seed: int, count: int, p: float) -> np.ndarray:
    """Flat bool keep decisions (True = kept) for `count` elements from `seed`."""
    drop = drop_threshold(p)
    keep = np.empty(count, dtype=bool)

    def draw(index: int, start: int, stop: int) -> None:
        generator = _segment_generator(seed, index)
        for first in range(start, stop, MASK_CHUNK):
            _decide(generator, drop, keep[first : min(stop, first + MASK_CHUNK)])

    _by_segments(count, draw)
    return keep


def _segment_generator(seed: int, index: int) -> np.random.SFC64:
    return np.random.SFC64(np.random.SeedSequence([seed, index]))


def _by_segments(count: int, work: Callable[[int, int, int], None]) -> None:
    """work(index, start, stop) for every SEGMENT of `count` elements: on torch's intra-op threads
    when there are several (numpy releases the GIL in its generators and ufuncs). Masks draw each
    segment from its own generator, seeded by (seed, index): the same mask for any thread count."""
    bounds = [(start, min(count, start + SEGMENT)) for start in range(0, count, SEGMENT)]
    workers = min(len(bounds), torch.get_num_threads())
    if workers <= 1:
        for index, (start, stop) in enumerate(bounds):
            work(index, start, stop)
        return
    futures = [
        _executor(workers).submit(work, index, start, stop)
        for index, (start, stop) in enumerate(bounds)
    ]
    for future in futures:
        future.result()


_executors: dict[int, ThreadPoolExecutor] = {}


def _executor(workers: int) -> ThreadPoolExecutor:
    if workers not in _executors:
        _executors[workers] = ThreadPoolExecutor(workers, thread_name_prefix="dropout-masks")
    return _executors[workers]


# A forked child (a DataLoader worker) has none of the parent's threads: it starts its own pools.
os.register_at_fork(after_in_child=_executors.clear)


def draw_dropout_mask(
    shape: torch.Size | tuple[int, ...], p: float, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """(keep, scaled) CPU tensors of `shape`, drawn together: keep is bool (True = kept), scaled
    is the same mask in `dtype`, 1 / (1 - p) where kept and 0 where dropped (0 <= p < 1)."""
    with torch.profiler.record_function(PROFILE_LABEL):
        return _draw_dropout_mask(_seed_from_torch(), tuple(shape), p, dtype)


def _draw_dropout_mask(
    seed: int, shape: tuple[int, ...], p: float, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    count = math.prod(shape)
    drop = drop_threshold(p)
    keep = np.empty(count, dtype=bool)
    scaled, write = _scaled_writer(count, p, dtype)

    def draw(index: int, start: int, stop: int) -> None:
        generator = _segment_generator(seed, index)
        for first in range(start, stop, MASK_CHUNK):
            last = min(stop, first + MASK_CHUNK)
            _decide(generator, drop, keep[first:last])
            write(first, last, keep[first:last])  # while the decisions are in cache

    _by_segments(count, draw)
    return torch.from_numpy(keep).view(shape), scaled.view(shape)


def _scaled_writer(
    count: int, p: float, dtype: torch.dtype
) -> tuple[Tensor, Callable[[int, int, np.ndarray], None]]:
    """(flat mask of `dtype`, write(start, stop, keep) that fills mask[start:stop] from keep)."""
    scale = torch.tensor(1.0 / (1.0 - p), dtype=dtype)
    mask = torch.empty(count, dtype=dtype)
    if not dtype.is_floating_point or scale.element_size() not in _UNSIGNED:

        def write_through_torch(start: int, stop: int, keep: np.ndarray) -> None:
            mask[start:stop] = torch.from_numpy(keep).to(dtype) * scale

        return mask, write_through_torch
    signed, unsigned = _UNSIGNED[scale.element_size()]
    # 0 or the bit pattern of the scale, written as unsigned integers into the tensor's memory:
    # numpy's integer ufuncs, no float conversion.
    scale_bits = unsigned(scale.view(signed).item() & ((1 << (8 * scale.element_size())) - 1))
    values = mask.view(signed).numpy().view(unsigned)

    def write_bits(start: int, stop: int, keep: np.ndarray) -> None:
        chunk = values[start:stop]
        np.copyto(chunk, keep, casting="unsafe")
        np.multiply(chunk, scale_bits, out=chunk)

    return mask, write_bits


# Float dtypes that numpy multiplies natively: their masks are applied by numpy, chunk by chunk
# as they are drawn, and only the bool mask is kept for the backward pass, which applies it the
# same way. Others (bf16) get the mask in their dtype, which the backward pass keeps (2 bytes).
_NUMPY_FLOATS = {torch.float32: np.float32, torch.float64: np.float64}


def _apply_in_numpy(
    x: Tensor, p: float, seed: int | None = None, keep: np.ndarray | None = None
) -> tuple[Tensor, np.ndarray]:
    """(x * mask, keep) with the mask drawn from `seed` (forward) or given as `keep` (backward),
    built and applied in cache-sized chunks: the scaled mask never goes through memory."""
    source = x.detach().contiguous()
    out = torch.empty_like(source)
    values, results = source.view(-1).numpy(), out.view(-1).numpy()
    count = values.size
    draw = keep is None
    if draw:
        keep = np.empty(count, dtype=bool)
    drop = drop_threshold(p)
    scale = torch.tensor(1.0 / (1.0 - p), dtype=x.dtype)
    signed, unsigned = _UNSIGNED[scale.element_size()]
    scale_bits = unsigned(scale.view(signed).item() & ((1 << (8 * scale.element_size())) - 1))
    float_type = _NUMPY_FLOATS[x.dtype]

    def apply(index: int, start: int, stop: int) -> None:
        generator = _segment_generator(seed, index) if draw else None
        scratch = np.empty(min(stop - start, MASK_CHUNK), dtype=unsigned)
        for first in range(start, stop, MASK_CHUNK):
            last = min(stop, first + MASK_CHUNK)
            if generator is not None:
                _decide(generator, drop, keep[first:last])
            mask = scratch[: last - first]
            np.copyto(mask, keep[first:last], casting="unsafe")
            np.multiply(mask, scale_bits, out=mask)
            np.multiply(values[first:last], mask.view(float_type), out=results[first:last])

    _by_segments(count, apply)
    return out.view(x.shape), keep


class _Dropout(torch.autograd.Function):
    """x * mask, with the mask kept for the backward pass as described above."""

    @staticmethod
    def forward(ctx, x: Tensor, p: float) -> Tensor:
        ctx.p, ctx.dtype = p, x.dtype
        if x.dtype in _NUMPY_FLOATS:
            with torch.profiler.record_function(PROFILE_LABEL):
                out, keep = _apply_in_numpy(x, p, seed=_seed_from_torch())
            ctx.save_for_backward(torch.from_numpy(keep).view(x.shape))
            return out
        keep, scaled = draw_dropout_mask(x.shape, p, x.dtype)
        ctx.save_for_backward(scaled)
        return x * scaled

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (mask,) = ctx.saved_tensors
        if mask.dtype == torch.bool:
            with torch.profiler.record_function(PROFILE_LABEL):
                grad_x, _ = _apply_in_numpy(grad.to(ctx.dtype), ctx.p, keep=mask.view(-1).numpy())
            return grad_x, None
        return grad * mask, None


def cpu_dropout(x: Tensor, p: float) -> Tensor:
    """Dropout of a CPU tensor in eager mode (0 < p < 1): one multiply forward, one backward."""
    return _Dropout.apply(x, p)


@torch.library.custom_op("creative_agent::keep_mask_u8", mutates_args=())
def keep_mask_u8(seed: Tensor, shape: list[int], p: float) -> Tensor:
    """uint8 keep mask (1 = kept) of `shape` from a one-element int64 CPU `seed` tensor. The seed
    is an input so that compiled graphs draw it from torch's generator and never merge two masks."""
    with torch.profiler.record_function(PROFILE_LABEL):
        keep = keep_mask(int(seed.item()), math.prod(shape), p)
    return torch.from_numpy(keep).view(torch.uint8).view(shape)


@keep_mask_u8.register_fake
def _(seed: Tensor, shape: list[int], p: float) -> Tensor:
    return seed.new_empty(shape, dtype=torch.uint8)


def compiled_dropout(x: Tensor, p: float) -> Tensor:
    """Dropout inside a torch.compile'd graph on CPU: inductor's own CPU random numbers cost about
    30 ns per element (measured, a whole training step's worth of time), these masks about 1."""
    seed = torch.randint(0, 2**62, (1,))
    return x * keep_mask_u8(seed, list(x.shape), p).to(x.dtype) * (1.0 / (1.0 - p))
